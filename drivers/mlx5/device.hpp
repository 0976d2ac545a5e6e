/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/mlx5: the seam between the mlx5 driver logic and a
 * device (shared/MLX5.md §5(b)). The mlx5dv_wr_* builders are header-inline
 * calls through function pointers, so the seam is semantic: a handful of
 * device operations, with the UMR passed as the raw WQE bytes the driver
 * built (umr_wqe.hpp). Two implementations:
 *  - HwDevice (hw_device.cpp): libmlx5 + DEVX on a ConnectX;
 *  - Mlx5Model (model/): a model that decodes those bytes by the PRM
 *    layouts and moves DMA through io_uring fixed buffers.
 *
 * Keys follow mlx5: lkey == rkey == index << 8 | tag.
 * Thread safety: every implementation is safe to call from any thread; the
 * driver calls the control operations under the core's context lock.
 */
#ifndef MRSYNC_MLX5_DEVICE_HPP
#define MRSYNC_MLX5_DEVICE_HPP

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <mrsync/result.hpp>

namespace mrsync::mlx5 {

/** What the driver needs to know of the device (DEVX QUERY_HCA_CAP). */
struct DeviceCaps {
	std::uint32_t log_max_klm_list_size = 0;
	std::uint32_t max_indirection = 0;
	bool umr_indirect_mkey_disabled = true;
	bool umr_modify_atomic_disabled = true;
	/** KLMs one inline UMR WQE may carry on the UMR QP (MLX5.md §1). */
	std::uint32_t umr_max_klms = 0;
	/** WQE slots (64-byte basic blocks) of the UMR QP's send queue. */
	std::uint32_t sq_wqebbs = 0;
	std::uint32_t umr_qpn = 0;
	/** Indirect mkeys are created with MLX5DV_MKEY_INIT_ATTR_FLAGS_UPDATE_TAG:
	 *  a UMR with the MKEY mask bit may give the key a new 8-bit tag. */
	bool update_tag = false;
};

/** An MR (a leaf): lkey == rkey for our purposes. */
struct MrHandle {
	std::uint32_t key = 0;
	std::uint64_t addr = 0;
	std::uint64_t len = 0;
};

/** One work completion of the UMR QP (only these fields are valid on error,
 *  as on mlx5: cq.c mlx5_handle_error_cqe). */
struct Cqe {
	std::uint64_t wr_id = 0;
	int status = 0;             /**< 0 = IBV_WC_SUCCESS, else an ibv_wc_status */
	std::uint32_t vendor_err = 0;
};

/** ibv_wc_status values the driver tells apart. */
inline constexpr int kWcSuccess = 0;
inline constexpr int kWcLocQpOpErr = 2;
inline constexpr int kWcLocProtErr = 4;
inline constexpr int kWcWrFlushErr = 5;
inline constexpr int kWcRemAccessErr = 10;
inline constexpr int kWcGeneralErr = 21;

class Device {
public:
	virtual ~Device() = default;
	virtual std::string_view name() const noexcept = 0;
	/** The capabilities; fixed for the device's life. */
	virtual Result<DeviceCaps> query_caps() = 0;
	/** Registers [va, va + len) (pins it); access is MRSYNC_ACCESS_* (== IBV_ACCESS_*). */
	virtual Result<MrHandle> reg_mr(std::uint64_t va, std::uint64_t len, std::uint32_t access) = 0;
	/** Deregisters; returns once the device can no longer use the MR. */
	virtual Status dereg_mr(std::uint32_t key) = 0;
	/** A new indirect mkey in the free state (lkey == rkey, tag 0); with
	 *  caps().update_tag a UMR may change its tag later (the key's number
	 *  changes with it). destroy_mkey names the object by its index: any
	 *  tag the key had will do. */
	virtual Result<std::uint32_t> create_mkey(std::uint16_t max_entries) = 0;
	virtual Status destroy_mkey(std::uint32_t key) = 0;
	/** Posts a WQE built by umr_wqe.hpp on the UMR QP, INLINE. Errors are
	 *  post-time errors (rolled back): EINVAL, ENOMEM (SQ full, too many
	 *  entries), EOPNOTSUPP, EIO (QP not in RTS). */
	virtual Status post_wqe(std::span<const std::byte> wqe, std::uint64_t wr_id) = 0;
	/** Collects UMR QP completions without blocking. */
	virtual std::size_t poll(std::span<Cqe> out) = 0;
	/** RESET -> INIT -> RTR -> RTS, connected to itself again. */
	virtual Status reset_qp() = 0;
	/** Fork child: the kernel objects are the parent's; drop them without
	 *  destroying anything. The device is destroyed next. */
	virtual void abandon() noexcept = 0;

	/**
	 * VFIO mode (docs/mlx5.md, "VFIO mode"): a new MTT-mode mkey addressing
	 * [va, va + len) by virtual address, whose MTT entry k is the IOVA
	 * `iova + k * page` -- the process owns the IOVA space and maps it
	 * itself (drivers/vfio). Created once per registration: a resync
	 * rewrites the IOMMU entries behind those IOVAs, never the MTT. Destroy
	 * it with destroy_mkey(). `va`, `iova` and `len` are page-aligned;
	 * access is MRSYNC_ACCESS_*.
	 * @return the key (lkey == rkey), or ENOTSUP where the device cannot
	 *         (the default, and HwDevice on rdma-core 44: see there).
	 * Thread safety: as the other control operations.
	 */
	virtual Result<std::uint32_t> create_mtt_mkey(std::uint64_t va, std::uint64_t iova,
						      std::uint64_t len, std::uint32_t access)
	{
		(void)va;
		(void)iova;
		(void)len;
		(void)access;
		return make_error(ENOTSUP, std::string(name()) + ": no MTT mkeys (VFIO mode)");
	}
};

} // namespace mrsync::mlx5

#endif
