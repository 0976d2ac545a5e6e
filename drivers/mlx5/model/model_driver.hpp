/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The "mlx5-model" driver kind: the mlx5 driver logic (mlx5_driver.hpp) on
 * the Mlx5Model instead of a ConnectX. Linked into test programs and the
 * benchmark only, never into libmrsync.
 * Pass a ModelDriverArg as mrsync_params.driver_arg (NULL: defaults), then
 * reach the model with model_of(ctx).
 * Thread safety: as the driver and the model.
 */
#ifndef MRSYNC_MLX5_MODEL_DRIVER_HPP
#define MRSYNC_MLX5_MODEL_DRIVER_HPP

#include <mrsync/mrsync.h>

#include "mlx5_driver.hpp"
#include "mlx5_model.hpp"

namespace mrsync::mlx5 {

struct ModelDriverArg {
	ModelOptions model;
	DriverOptions driver;
};

/** The driver of a context created with driver "mlx5-model". */
Mlx5Driver &driver_of_model_ctx(mrsync_ctx *ctx);
/** Its model. */
Mlx5Model &model_of(mrsync_ctx *ctx);

} // namespace mrsync::mlx5

#endif
