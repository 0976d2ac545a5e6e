/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The hardware test's VFIO mode part (docs/mlx5.md, "VFIO mode"): where a
 * Mellanox function is bound to vfio-pci, it opens it with rdma-core's mlx5
 * VFIO provider and asks the "mlx5-vfio" driver for MTT mkeys over
 * drivers/vfio's IOVAs; elsewhere it answers "skipped: ...".
 * Thread safety: the test's one thread.
 */
#ifndef MRSYNC_TEST_HW_MLX5_VFIO_FINDING_HPP
#define MRSYNC_TEST_HW_MLX5_VFIO_FINDING_HPP

#include <string>

namespace mrsync::mlx5::hw {

/** The finding's answer: what the provider and the driver did, or why not. */
std::string vfio_mode();

} // namespace mrsync::mlx5::hw

#endif
