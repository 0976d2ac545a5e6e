/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The "mlx5-vfio-model" driver kind: the mlx5 VFIO mode (vfio_mode.hpp) on
 * the MTT mkey MODEL (mtt_mkey_model.hpp) instead of a ConnectX on
 * vfio-pci, with drivers/vfio mapping a real container (the guest's edu).
 * Linked into test programs only, never into libmrsync.
 * Pass a VfioModelArg as mrsync_params.driver_arg (required), then reach the
 * model with mtt_model_of(ctx).
 * Thread safety: as the driver and the model.
 */
#ifndef MRSYNC_MLX5_VFIO_MODEL_DRIVER_HPP
#define MRSYNC_MLX5_VFIO_MODEL_DRIVER_HPP

#include <mrsync/mrsync.h>
#include <mrsync/vfio.h>

#include "mtt_mkey_model.hpp"
#include "vfio_mode.hpp"

namespace mrsync::mlx5 {

struct VfioModelArg {
	mrsync_vfio_params iommu = MRSYNC_VFIO_PARAMS_INIT; /**< drivers/vfio's arg */
	DmaEngine dma;                                      /**< the device's DMA */
	VfioModeOptions mode;
};

/** The driver of a context created with driver "mlx5-vfio-model". */
VfioModeDriver &vfio_mode_driver_of(mrsync_ctx *ctx);
/** Its model. */
MttMkeyModel &mtt_model_of(mrsync_ctx *ctx);

} // namespace mrsync::mlx5

#endif
