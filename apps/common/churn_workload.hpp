/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The churn workload shared by mrsync-demo and the torture suite: DMA
 * threads write through the software HCA (or options.dma) into registered
 * buffers, every write checked by content, while a mutator thread changes
 * the memory underneath them and a hinter thread keeps hinting whole buffers.
 *
 * The buffers: anonymous 4 KiB-page buffers, memfd-backed (MAP_SHARED)
 * buffers and, when hugepages are free, hugepage buffers. The mutator, on
 * anonymous and hugepage pages: munmap, MAP_FIXED, MADV_DONTNEED (of one page,
 * or of a run of pages of its buffer), mremap, and
 * a SysV shm segment attached over the page (munmap + shmat; shmat(SHM_REMAP)
 * too when the kernel module is a source) that is later detached (shmdt) and
 * replaced by anonymous memory again. On memfd pages: fallocate(PUNCH_HOLE),
 * ftruncate shrink + grow, MADV_DONTNEED and MAP_FIXED of the same file page.
 * Most DMA writes cover one page; some span 2 to 4 adjacent pages of a buffer
 * (one wide lookup, one DMA). The hinter calls mrsync_hint over whole buffers
 * and takes no page lock: its pins race every change (the "race B" of
 * issue 9, a re-pin between MADV_DONTNEED's event and its zap).
 *
 * Each page has a lock, held by whoever acts on it (several are taken in
 * address order), so a page is never written by DMA while it is being
 * changed: every loss the workload counts is the cache's fault, not a race of
 * the workload. Pages of one registration are still changed while DMA to its
 * other pages is in flight, so resyncs run under live traffic.
 *
 * A lost write is a DMA that completed successfully but whose bytes the
 * application does not see (including one that "succeeded" into a page that
 * is no longer mapped). A refused DMA or a lookup that fails because the page
 * is unmapped is correct behaviour and counted separately; so is a lookup
 * refused with ENOTSUP because no source of the context can see the memory
 * (userfaultfd and shm or memfd pages), which only a context without the
 * kernel module may answer.
 */
#ifndef MRSYNC_CHURN_WORKLOAD_HPP
#define MRSYNC_CHURN_WORKLOAD_HPP

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include <mrsync/mrsync.hpp>

#include "cli.hpp"

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
	/** DMA writes + changes in all; the mutator is paced so that its
	 *  changes (churn_percent of them) spread over the whole run. */
	std::uint64_t ops = 100'000;
	double seconds = 0;                /**< stop after this long (0: no limit) */
	bool stop_at_first_loss = false;   /**< for negative controls: stop once a write is lost */
	unsigned dma_threads = 2;
	unsigned buffers = 16;             /**< anonymous 4 KiB-page buffers, each one registration */
	unsigned memfd_buffers = 4;        /**< memfd-backed (MAP_SHARED) buffers of the same size */
	unsigned pages_per_buffer = 16;
	/** Add two one-hugepage buffers when hugepages are free (one each: a
	 *  registration never spans two hugetlb files, which Debian 6.1's
	 *  io_uring refuses to pin). */
	bool hugepages = true;
	unsigned churn_percent = 10;       /**< share of operations that change the mapping */
	unsigned wide_percent = 10;        /**< share of DMA writes spanning 2-4 pages */
	bool hinter = true;                /**< run the hinter thread */
	bool shm = true;                   /**< attach SysV shm over pages */
	unsigned stress_threads = 0;       /**< CPU-burning threads beside the workload */
	/** The context's mrsync_params::sources (0 = automatic: the module when
	 *  /dev/mrsync exists). Without the module, ENOTSUP refusals of shm and
	 *  memfd memory are allowed, and shmat(SHM_REMAP) is not done: it
	 *  replaces a mapping without any event userfaultfd could report. */
	std::uint32_t sources = 0;
	std::uint64_t seed = 1;
	/** Empty: the uring HCA of the context. Called from several threads. */
	DmaWrite dma;
	/** Called about every 100 ms from the reporting thread (live status). */
	std::function<void(const struct Report &)> progress;
};

/** What a lost write was written to (a write spanning several kinds counts
 *  as memfd, else shm, else hugepage, else anonymous). */
enum class LossKind { anon, hugepage, shm, memfd };

struct Report {
	std::uint64_t ops = 0;            /**< operations done */
	std::uint64_t dma_writes = 0;     /**< DMA writes that completed successfully */
	std::uint64_t lost_writes = 0;    /**< ... whose bytes the application does not see */
	std::uint64_t lost_by[4] = {};    /**< lost_writes by LossKind */
	std::uint64_t refused = 0;        /**< DMA the device refused (invalid entry) */
	std::uint64_t unmapped_gets = 0;  /**< lookups refused because the page is unmapped */
	/** Lookups refused with ENOTSUP because the memory is shm or memfd,
	 *  which the context's sources cannot see (userfaultfd). */
	std::uint64_t unwatchable_gets = 0;
	std::uint64_t wide_writes = 0;    /**< of dma_writes, those spanning several pages */
	std::uint64_t churn_ops = 0;      /**< changes of the memory done */
	std::uint64_t hugepage_ops = 0;   /**< of which on hugepages */
	std::uint64_t shm_ops = 0;        /**< of which SysV shm attaches and detaches */
	std::uint64_t memfd_ops = 0;      /**< of which on memfd pages */
	std::uint64_t hints = 0;          /**< whole-buffer hints that succeeded */
	std::uint64_t hints_refused = 0;  /**< ... that failed with EFAULT or ENOTSUP */
	std::uint64_t errors = 0;         /**< unexpected failures (see first_error) */
	/** ENOTSUP refusals are allowed (no kernel module among the sources). */
	bool refusals_allowed = false;
	std::string first_error;
	double seconds = 0;
};

/** Runs the workload on `ctx`, whose driver must be the uring HCA unless
 *  options.dma says how to write.
 *  @return the report, or an error if the workload could not be set up. */
Result<Report> run(Context &ctx, const Options &options);

/** The workload's options, bound to `options` (which must outlive them):
 *  --ops, --seconds, --stop-at-loss, --threads (DMA threads), --stress,
 *  --seed; the arena: --buffers (anonymous), --pages (per buffer),
 *  --memfd-buffers, --no-hugepages, --churn-percent; and --no-shm /
 *  --no-hinter, which leave a kind of change out (to tell which one loses
 *  writes). Tools append their own to these and call cli::parse(). */
cli::Options cli_options(Options &options);

/** --negative-control (MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK) and
 *  --unguarded (MRSYNC_CTX_F_TEST_UNGUARDED_PINS), or-ed into `ctx_flags`:
 *  the protections a torture switches off to show it can fail. */
cli::Options negative_control_options(std::uint32_t &ctx_flags);

/**
 * The verdict: a run passes with no lost write, no unexpected error, and
 * ENOTSUP refusals only where report.refusals_allowed; a negative control
 * (a protection switched off) passes only if writes were lost.
 */
bool passed(const Report &report, bool negative);

/**
 * Prints the report and the context's counters, then "1 passed, 0 failed"
 * or "0 passed, 1 failed" (see passed()).
 * @return the exit code (0 = passed).
 */
int print_verdict(const char *name, Context &ctx, const Report &report, bool negative);

/** One line: "ops=N lost_writes=N refused=N ... seconds=S ops_per_s=N". */
std::string summary(const Report &report);

} // namespace mrsync::workload

#endif
