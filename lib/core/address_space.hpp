/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to lib/core and lib/monitor: what the cache and its event sources
 * ask of the process's address space — range validation and alignment, "is
 * all of it mapped", and which mappings lie in a range, with their kind and
 * rights (one PROCMAP_QUERY a mapping, or /proc/self/maps).
 */
#ifndef MRSYNC_MONITOR_ADDRESS_SPACE_HPP
#define MRSYNC_MONITOR_ADDRESS_SPACE_HPP

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <mrsync/result.hpp>
#include <mrsync/source.hpp>

namespace mrsync::detail {

/** @return the base page size. Thread safety: any thread. */
std::uint64_t page_size() noexcept;

/** @return the huge page sizes the kernel offers, ascending (maybe none).
 *  Thread safety: any thread. */
std::span<const std::uint64_t> huge_page_sizes() noexcept;

/** @return "[0x1000, 0x3000)". Thread safety: any thread. */
std::string format_range(Range range);

/**
 * Validates the range [va, va + len) an API was given.
 * @param what the caller's name, for the message ("watch", "rearm").
 * @return the range, or EINVAL if it is empty or wraps around the address
 *         space (after rounding out to whole pages, too).
 * Thread safety: any thread.
 */
Result<Range> checked_range(std::uint64_t va, std::uint64_t len, std::string_view what);

/** @return `range` rounded out to multiples of `align` (a power of two), or
 *  nothing if that wraps. Thread safety: any thread. */
std::optional<Range> align_out(Range range, std::uint64_t align) noexcept;

/** @return true if every page of the page-aligned `range` is mapped (one
 *  msync(MS_ASYNC), which only walks the mappings). Thread safety: any thread. */
bool fully_mapped(Range range) noexcept;

/** The page size the kernel uses for the mapping that holds `va` (larger
 *  inside hugetlb mappings), or 0 if nothing is mapped there: PROCMAP_QUERY,
 *  or the "KernelPageSize" of /proc/self/smaps (slow) on older kernels.
 *  Thread safety: any thread. */
std::uint64_t kernel_page_size_at(std::uint64_t va);

/** A mapping (or the part of it inside the range asked about). */
struct Mapping {
	Range range;
	std::string name;        /**< pathname or [heap], [stack], ...; "" if anonymous */
	bool shared = false;     /**< MAP_SHARED (the 's' of /proc/self/maps) */
	bool readable = false;
	bool writable = false;
	std::uint64_t inode = 0; /**< of the backing file; 0 for anonymous memory */
	std::uint64_t page_size = 0; /**< the kernel's page size there; 0 = unknown */

	/** Private memory no file backs: only this address space can change its
	 *  pages, and it does so through calls the kernel can report (unmap,
	 *  remap, madvise). MAP_PRIVATE|MAP_ANONYMOUS, [heap], [stack], and
	 *  anonymous hugetlb (an unlinked hugetlbfs file no one else can reach). */
	bool private_anonymous() const noexcept
	{
		return !shared && (inode == 0 || name.starts_with("/anon_hugepage"));
	}
};

/**
 * The mappings that intersect `range`, clipped to it, in address order: one
 * PROCMAP_QUERY ioctl per mapping where the kernel has it (Linux 6.11),
 * else /proc/self/maps read and parsed (slow). A snapshot: other threads may
 * change the address space meanwhile.
 * @return the mappings, or the errno of opening/reading the file.
 * Thread safety: any thread.
 */
Result<std::vector<Mapping>> mappings_in(Range range);

/** The whole mapping holding `va` (not clipped: one PROCMAP_QUERY where the
 *  kernel has it), or nothing when none does or it cannot be told.
 *  Thread safety: any thread. */
std::optional<Mapping> mapping_at(std::uint64_t va);

/** The readable and writable mapped parts of [start, end), sorted and
 *  merged; empty on error (everything is then a hole: the safe side).
 *  Thread safety: any thread. */
std::vector<Range> mapped_writable(std::uint64_t start, std::uint64_t end);

/** @return the parts of `range` that none of `mappings` covers.
 *  Thread safety: any thread. */
std::vector<Range> holes_in(Range range, std::span<const Mapping> mappings);

} // namespace mrsync::detail

#endif
