/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The vfio driver: mrsync keeps a VFIO type1 container's IOMMU mappings in
 * sync with the address space (docs/vfio.md).
 *
 * Pass a struct mrsync_vfio_params as mrsync_params.driver_arg with
 * driver = "vfio". Either
 *  - `device` names a device bound to vfio-pci ("0000:00:04.0", or its group
 *    "/dev/vfio/N"): the driver opens a container and the device's group,
 *    sets VFIO_TYPE1v2_IOMMU and owns both; or
 *  - `container_fd` with MRSYNC_VFIO_F_ADOPT_CONTAINER: a container whose
 *    IOMMU is already set (DPDK's default container, or the application's
 *    own). The driver maps into it and never closes it. DPDK 22.11's
 *    rte_vfio_get_container_fd() opens a new, empty container instead of
 *    returning the default one: docs/vfio.md, "Use with DPDK", says how to
 *    find the right fd.
 *
 * The key of a registration is its IOVA, which never changes: use
 * mrsync_vfio_iova() on what mrsync_get() returned. A resync unmaps the
 * changed entries (VFIO_IOMMU_UNMAP_DMA returns after the IOTLB flush: that is
 * the fence, and the kernel unpins the old pages after it); the next
 * mrsync_get() that covers them maps the new pages at the same IOVA. An
 * entry left invalid stays unmapped: device DMA to it faults in the IOMMU.
 *
 * Each entry (mrsync_params.entry_size, default one page) is its own
 * VFIO_IOMMU_MAP_DMA, because type1v2 cannot unmap part of a mapping: a
 * larger entry_size means fewer ioctls and fewer of the container's
 * mappings (dma_entry_limit, 65535 by default) at a coarser invalidation.
 *
 * Errors and struct sizes as in mrsync.h: -errno and mrsync_last_error().
 */
#ifndef MRSYNC_VFIO_H
#define MRSYNC_VFIO_H

#include <stdint.h>

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif

/** mrsync_vfio_params.flags: use container_fd (it must be valid, any value
 *  including 0); without it container_fd must be 0 and device is required. */
#define MRSYNC_VFIO_F_ADOPT_CONTAINER (1u << 0)

struct mrsync_vfio_params {
	uint32_t struct_size;   /**< sizeof(struct mrsync_vfio_params) */
	uint32_t flags;         /**< MRSYNC_VFIO_F_* */
	const char *device;     /**< PCI address or /dev/vfio/N; NULL with ADOPT */
	int32_t container_fd;   /**< with MRSYNC_VFIO_F_ADOPT_CONTAINER */
	uint32_t dma_mask_bits; /**< the device addresses IOVAs below 2^bits;
				     0 = 64 (QEMU's edu: 28) */
	uint64_t iova_base;     /**< lowest IOVA to hand out; 0 = 1 MiB */
	uint64_t iova_limit;    /**< IOVAs handed out stay below it; 0 = the mask's */
};

#define MRSYNC_VFIO_PARAMS_INIT {.struct_size = sizeof(struct mrsync_vfio_params)}

/** The IOVA the device uses for `addr` inside a registration of the vfio
 *  driver (its keys carry the IOVA of reg->addr: lkey the low half, rkey the
 *  high half). Thread safety: any thread. */
static inline uint64_t mrsync_vfio_iova(const struct mrsync_reg *reg, const void *addr)
{
	const uint64_t base = (uint64_t)reg->lkey | ((uint64_t)reg->rkey << 32);
	return base + ((uint64_t)(uintptr_t)addr - reg->addr);
}

#ifdef __cplusplus
}
#endif

#endif
