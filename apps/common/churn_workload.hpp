/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The churn workload shared by mrsync-demo and the torture suite: DMA
 * threads write through the software HCA into registered buffers, every
 * write checked by content, while a churn thread unmaps, remaps (MAP_FIXED),
 * madvise(DONTNEED)s and mremaps those buffers underneath them.
 *
 * Each page has a lock, held by whoever acts on it, so a page is never
 * written by DMA while it is being remapped: every loss the workload counts
 * is the cache's fault, not a race of the workload. Pages of one registration
 * are still churned while DMA to its other pages is in flight, so resyncs
 * run under live traffic.
 *
 * A lost write is a DMA that completed successfully but whose bytes the
 * application does not see (including one that "succeeded" into a page that
 * is no longer mapped). A refused DMA or a lookup that fails because the page
 * is unmapped is correct behaviour and counted separately.
 */
#ifndef MRSYNC_CHURN_WORKLOAD_HPP
#define MRSYNC_CHURN_WORKLOAD_HPP

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include <mrsync/mrsync.hpp>

namespace mrsync::workload {

/**
 * The device the workload writes through: DMA `bytes` at `va` with the
 * registration's keys and wait for it. @return the completion's result (the
 * byte count, or -errno when the device refused), or an error when the
 * request could not be made at all.
 */
using DmaWrite = std::function<Result<int>(const Registration &reg, std::uint64_t va,
					   std::span<const std::byte> bytes, std::uint64_t tag)>;

struct Options {
	std::uint64_t ops = 100'000;       /**< DMA writes + churn operations in all */
	unsigned dma_threads = 2;
	unsigned buffers = 16;             /**< 4 KiB-page buffers, each one registration */
	unsigned pages_per_buffer = 16;
	bool hugepages = true;             /**< add a 2-hugepage buffer when hugepages exist */
	unsigned churn_percent = 10;       /**< share of operations that change the mapping */
	std::uint64_t seed = 1;
	/** Empty: the uring HCA of the context. Called from several threads. */
	DmaWrite dma;
	/** Called about every 100 ms from the reporting thread (live status). */
	std::function<void(const struct Report &)> progress;
};

struct Report {
	std::uint64_t ops = 0;            /**< operations done */
	std::uint64_t dma_writes = 0;     /**< DMA writes that completed successfully */
	std::uint64_t lost_writes = 0;    /**< ... whose bytes the application does not see */
	std::uint64_t refused = 0;        /**< DMA the device refused (invalid entry) */
	std::uint64_t unmapped_gets = 0;  /**< lookups refused because the page is unmapped */
	std::uint64_t churn_ops = 0;      /**< unmap/remap/madvise/mremap done */
	std::uint64_t hugepage_ops = 0;   /**< of which on the hugepage buffer */
	std::uint64_t errors = 0;         /**< unexpected failures (see first_error) */
	std::string first_error;
	double seconds = 0;
};

/** Runs the workload on `ctx`, whose driver must be the uring HCA unless
 *  options.dma says how to write.
 *  @return the report, or an error if the workload could not be set up. */
Result<Report> run(Context &ctx, const Options &options);

/** If argv[i] is a workload option (--ops N, --threads N), stores it in
 *  `options` (advancing i) and returns true. */
bool parse_option(int argc, char **argv, int &i, Options &options);

/**
 * Prints the report and the context's counters, then "1 passed, 0 failed"
 * or "0 passed, 1 failed": a run passes with no lost write and no error,
 * a negative control (generation check off) passes only if writes were lost.
 * @return the exit code (0 = passed).
 */
int print_verdict(const char *name, Context &ctx, const Report &report, bool negative);

/** One line: "ops=N lost_writes=N refused=N ...". */
std::string summary(const Report &report);

} // namespace mrsync::workload

#endif
