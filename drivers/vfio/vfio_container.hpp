/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/vfio and its tests: a VFIO type1 container -- opened
 * here for one device's group, or adopted from its owner (DPDK) -- and the
 * three ioctls the driver needs on it: GET_INFO, MAP_DMA, UNMAP_DMA.
 *
 * Thread safety: none of its own; the driver calls it under the core's
 * context lock, a test from one thread.
 */
#ifndef MRSYNC_VFIO_CONTAINER_HPP
#define MRSYNC_VFIO_CONTAINER_HPP

#include <cstdint>
#include <string>
#include <vector>

#include <mrsync/result.hpp>

#include "unique_fd.hpp"

namespace mrsync::vfio {

/** What VFIO_IOMMU_GET_INFO says about the container. */
struct IommuInfo {
	std::uint64_t pgsizes = 0;          /**< IOMMU page sizes (bitmap) */
	struct Range {
		std::uint64_t start, end;   /**< inclusive end, as the kernel says */
	};
	std::vector<Range> iova_ranges;     /**< empty: the kernel did not say */
	std::int64_t dma_avail = -1;        /**< mappings left; -1: not reported */
};

/** Resolves a device name to its group node: "/dev/vfio/N" as given, a PCI
 *  address through /sys/bus/pci/devices/<addr>/iommu_group. */
Result<std::string> group_path(const std::string &device);

class Container {
public:
	/** Opens /dev/vfio/vfio and the group of `device`, attaches the group
	 *  and sets `iommu_type` (VFIO_TYPE1v2_IOMMU; a test passes
	 *  VFIO_TYPE1_IOMMU, DPDK's choice, to check an adopted type1). */
	static Result<Container> open(const std::string &device, int iommu_type = kType1v2);
	static constexpr int kType1v2 = 3; /* VFIO_TYPE1v2_IOMMU */
	/** Uses `fd` (its IOMMU already set) without owning it. */
	static Result<Container> adopt(int fd);

	int fd() const noexcept { return adopted_ >= 0 ? adopted_ : container_.get(); }
	/** The group fd when opened here, else -1. */
	int group_fd() const noexcept { return group_.get(); }

	/** A device fd of the opened group (VFIO_GROUP_GET_DEVICE_FD). */
	Result<int> device_fd(const std::string &pci_address) const;

	Result<IommuInfo> info() const;

	/** VFIO_IOMMU_MAP_DMA, read + write. */
	Status map(std::uint64_t vaddr, std::uint64_t iova, std::uint64_t size) const;
	/** VFIO_IOMMU_UNMAP_DMA of every mapping inside [iova, iova + size);
	 *  returns once the IOTLB no longer holds them (the kernel unpins
	 *  after). @return the bytes unmapped. */
	Result<std::uint64_t> unmap(std::uint64_t iova, std::uint64_t size) const;

private:
	detail::UniqueFd container_;
	detail::UniqueFd group_;
	int adopted_ = -1;
};

} // namespace mrsync::vfio

#endif
