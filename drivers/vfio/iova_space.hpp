/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/vfio: hands out IOVA ranges for registrations, inside
 * the ranges the IOMMU accepts (VFIO_IOMMU_GET_INFO) and below the device's
 * DMA mask. An IOVA is a registration's key, so it is held for the
 * registration's whole life and only then given back.
 *
 * Thread safety: none; the driver calls it under the core's context lock.
 */
#ifndef MRSYNC_VFIO_IOVA_SPACE_HPP
#define MRSYNC_VFIO_IOVA_SPACE_HPP

#include <cstdint>
#include <map>

#include <mrsync/result.hpp>

namespace mrsync::vfio {

class IovaSpace {
public:
	/** Makes [start, end) available (end exclusive; overlaps merge). */
	void add(std::uint64_t start, std::uint64_t end);
	/** Removes [start, end) from what is available. */
	void remove(std::uint64_t start, std::uint64_t end);

	/** First fit of `size` bytes at a multiple of `align` (a power of two).
	 *  @return the IOVA, or ENOSPC naming the request. */
	Result<std::uint64_t> alloc(std::uint64_t size, std::uint64_t align);
	/** Gives back what alloc() returned. */
	void free(std::uint64_t iova, std::uint64_t size) { add(iova, iova + size); }

	/** Bytes available, for stats and tests. */
	std::uint64_t available() const noexcept;

private:
	std::map<std::uint64_t, std::uint64_t> free_; /* start -> end, disjoint */
};

} // namespace mrsync::vfio

#endif
