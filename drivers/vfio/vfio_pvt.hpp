/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/vfio and its unit tests: the parts of the driver that
 * need no device -- driver_arg validation and the translation diff that
 * decides which IOVA ranges to map and unmap.
 *
 * Thread safety: pure functions, any thread.
 */
#ifndef MRSYNC_VFIO_PVT_HPP
#define MRSYNC_VFIO_PVT_HPP

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/result.hpp>

namespace mrsync::vfio {

/** struct mrsync_vfio_params, validated and defaulted. */
struct Options {
	std::string device;      /**< empty when adopting */
	bool adopt = false;
	int container_fd = -1;
	std::uint64_t iova_base = 0;
	std::uint64_t iova_limit = 0; /**< exclusive; min(limit, 2^mask) */
};

/** Validates driver_arg (a struct mrsync_vfio_params *).
 *  @return the options, or EINVAL naming the field. */
Result<Options> parse_params(const void *arg);

/** A range of a registration whose validity differs between two
 *  translations: `valid` = it must be mapped now, else unmapped. */
struct Change {
	std::uint64_t offset = 0;
	std::uint64_t length = 0;
	bool valid = false;

	friend bool operator==(const Change &, const Change &) = default;
};

/** Merges two translations of the same registration (sorted extents, each
 *  covering [0, len)) in one pass over both: O(extents), not O(pages), so a
 *  resync of one page costs the same in 64 MiB as in 1 GiB. A change of
 *  backing with the validity kept (compaction re-pinning the same pages) is
 *  no change for the IOMMU. Adjacent changes of one kind are merged. */
std::vector<Change> validity_changes(std::span<const Extent> before,
				     std::span<const Extent> after);

/** `after` with the ranges of `invalid` (sorted, inside it) made invalid:
 *  what the IOMMU holds when the maps of a change were undone. */
std::vector<Extent> invalidated(std::span<const Extent> after, std::span<const Change> invalid);

} // namespace mrsync::vfio

#endif
