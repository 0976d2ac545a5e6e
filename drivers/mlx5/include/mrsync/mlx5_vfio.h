/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The mlx5 driver in VFIO mode (docs/mlx5.md, "VFIO mode"): a ConnectX
 * function bound to vfio-pci and driven from user space by rdma-core's mlx5
 * VFIO provider, so that the process owns the IOVA space. Each registration
 * gets an IOVA range for life from drivers/vfio, which maps it in the IOMMU,
 * and one MTT-mode mkey over that range, created once: a resync rewrites
 * IOMMU entries at the same IOVAs (VFIO_IOMMU_UNMAP_DMA returns after the
 * IOTLB flush: the fence) and never touches the mkey or its MTT, so lkey and
 * rkey never change.
 *
 * Pass a struct mrsync_mlx5_vfio_params as mrsync_params.driver_arg with
 * driver = "mlx5-vfio". On rdma-core 44 the driver is not available: the
 * provider keeps its VFIO container and its IOVA allocator private, so an
 * MTT mkey over drivers/vfio's IOVAs cannot be made through public API;
 * mrsync_ctx_create() fails with ENODEV and says so (or that no Mellanox
 * function is bound to vfio-pci). The structure is proven on a model
 * of the MTT mkey in the QEMU guest (test/vm/mlx5_vfio_test.cc).
 * Errors as in mrsync.h: -errno and mrsync_last_error().
 */
#ifndef MRSYNC_MLX5_VFIO_H
#define MRSYNC_MLX5_VFIO_H

#include <stdint.h>

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

struct mrsync_vfio_params;

struct mrsync_mlx5_vfio_params {
	uint32_t struct_size;                   /**< sizeof(struct mrsync_mlx5_vfio_params) */
	uint32_t flags;                         /**< none yet: 0 */
	/** drivers/vfio's arguments: the container to map into (the provider's,
	 *  adopted) and the IOVA window to hand out; required. */
	const struct mrsync_vfio_params *iommu;
	const char *device;                     /**< PCI address on vfio-pci; NULL = first */
};

#define MRSYNC_MLX5_VFIO_PARAMS_INIT {.struct_size = sizeof(struct mrsync_mlx5_vfio_params)}

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
