/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/mlx5 (and test/hw/mlx5): the production device on
 * libmlx5 44 + DEVX (shared/MLX5.md §1):
 *  - a DEVX context (mlx5dv_open_device), or the application's;
 *  - caps by QUERY_HCA_CAP through DEVX (mlx5dv_query_device reports none
 *    of the UMR limits);
 *  - indirect mkeys (mlx5dv_create_mkey), chunk MRs (ibv_reg_mr);
 *  - a private RC UMR QP connected to itself, created with MKEY_CONFIGURE |
 *    MR_LIST | RAW_WQE (MR_LIST: the rdma-core < 47 SQ-size bug), posting the
 *    driver's raw UMR WQEs INLINE and signalled.
 * Nothing here has run on hardware on the machines this was written on.
 * Thread safety: one lock around the QP and CQ.
 */
#ifndef MRSYNC_MLX5_HW_DEVICE_HPP
#define MRSYNC_MLX5_HW_DEVICE_HPP

#include <memory>
#include <string>

#include <mrsync/mlx5.h>

#include "device.hpp"
#include "mlx5_driver.hpp"

namespace mrsync::mlx5 {

/** Opens the device `params` names (or the first mlx5 device). */
Result<std::unique_ptr<Device>> open_hw_device(const mrsync_mlx5_params *params);

/** What struct mrsync_mlx5_params asks of the factory. */
struct FactoryOptions {
	DriverOptions driver;
	bool fallback_verbs = false; /**< MRSYNC_MLX5_F_FALLBACK_VERBS */
};

/** The options `params` asks for (NULL: the defaults); EINVAL naming the
 *  field for a size older than any struct or an unknown flag. A struct of
 *  the size before `flags` (MRSYNC_MLX5_PARAMS_SIZE_V1) reads as flags 0. */
Result<FactoryOptions> driver_options(const mrsync_mlx5_params *params);

/** Whether the mlx5 driver's failure `why` calls for the verbs driver:
 *  the flag is set and the device is there but lacks a capability
 *  (EOPNOTSUPP), not absent (ENODEV) or misused (EINVAL). */
bool falls_back_to_verbs(const FactoryOptions &options, const Error &why) noexcept;

/** Whether an mlx5 device with what the driver needs exists; `why` if not. */
bool hw_available(std::string &why);

} // namespace mrsync::mlx5

#endif
