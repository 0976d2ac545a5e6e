/* SPDX-License-Identifier: MIT */
/**
 * @file
 * MttMkeyModel: a MODEL of an mlx5 device in VFIO mode, for the guest test
 * of the mlx5 VFIO mode (test/vm/mlx5_vfio_test.cc). It implements one
 * operation of the seam (device.hpp) -- MTT-mode mkeys -- and the device's
 * translation through them, as the PRM describes an MTT mkey:
 *  - a key (index << 8, indices never reused, so a stale key never names a
 *    new mkey) addresses [start, start + len) by virtual address, with
 *    access rights;
 *  - its MTT holds one IOVA per page, written when the mkey is created and
 *    never again (counted: mtt_entries_written());
 *  - a write through key + address checks key, access and bounds (a refused
 *    one is EACCES, nothing moves), then translates each page's piece to
 *    mtt[page] + offset and hands it to the DMA engine.
 * The DMA engine is real: in the QEMU guest it is the edu device, whose DMA
 * goes through the guest's IOMMU (intel-iommu, vfio-pci), so what the IOVA
 * reaches is what drivers/vfio mapped there -- a stale IOMMU entry really
 * writes into a page the application no longer sees.
 * Everything else of the seam (leaf MRs, indirect mkeys, the UMR QP) is
 * EOPNOTSUPP: VFIO mode never posts a UMR.
 * Thread safety: every call may come from any thread (one model lock; the
 * DMA runs under it, one engine).
 */
#ifndef MRSYNC_MLX5_MTT_MKEY_MODEL_HPP
#define MRSYNC_MLX5_MTT_MKEY_MODEL_HPP

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "device.hpp"

namespace mrsync::mlx5 {

/** Moves `bytes` to `iova` through the IOMMU and waits for it. */
using DmaEngine = std::function<Status(std::uint64_t iova, std::span<const std::byte> bytes)>;

class MttMkeyModel final : public Device {
public:
	explicit MttMkeyModel(DmaEngine dma) : dma_(std::move(dma)) {}

	std::string_view name() const noexcept override { return "mtt-mkey-model"; }
	Result<std::uint32_t> create_mtt_mkey(std::uint64_t va, std::uint64_t iova,
					      std::uint64_t len, std::uint32_t access) override;
	Status destroy_mkey(std::uint32_t key) override;
	void abandon() noexcept override {}

	/* Not in VFIO mode: no leaf MRs, no indirect mkeys, no UMR QP. */
	Result<DeviceCaps> query_caps() override { return unsupported("query_caps"); }
	Result<MrHandle> reg_mr(std::uint64_t, std::uint64_t, std::uint32_t) override
	{
		return unsupported("reg_mr");
	}
	Status dereg_mr(std::uint32_t) override { return unsupported("dereg_mr"); }
	Result<std::uint32_t> create_mkey(std::uint16_t) override
	{
		return unsupported("create_mkey");
	}
	Status post_wqe(std::span<const std::byte>, std::uint64_t) override
	{
		return unsupported("post_wqe");
	}
	std::size_t poll(std::span<Cqe>) override { return 0; }
	Status reset_qp() override { return unsupported("reset_qp"); }

	/**
	 * A write of `bytes` at `va` through `key`, as a peer's RDMA WRITE
	 * (needs REMOTE_WRITE): key, access and bounds checked first, then
	 * one DMA per page piece at the IOVA the MTT names.
	 * @return the bytes written, EACCES (refused: nothing moved, message
	 *         says why) or the DMA engine's error.
	 */
	Result<std::size_t> write(std::uint32_t key, std::uint64_t va,
				  std::span<const std::byte> bytes);
	/** The IOVA `va` translates to through `key`, or EACCES. */
	Result<std::uint64_t> translate(std::uint32_t key, std::uint64_t va) const;

	std::uint64_t mkeys_created() const;
	/** MTT entries written since the model was made (only at creation). */
	std::uint64_t mtt_entries_written() const;

	static constexpr std::uint64_t kPage = 4096;

private:
	struct Mkey {
		std::uint64_t start = 0, len = 0;
		std::uint32_t access = 0;
		std::vector<std::uint64_t> mtt; /* one IOVA per page */
	};
	static Error unsupported(const char *op);
	Result<std::uint64_t> translate_locked(std::uint32_t key, std::uint64_t va,
					       std::uint64_t len) const;

	const DmaEngine dma_;
	mutable std::mutex mu_;
	std::map<std::uint32_t, Mkey> mkeys_;
	std::uint32_t next_index_ = 1;
	std::uint64_t created_ = 0, mtt_written_ = 0;
};

} // namespace mrsync::mlx5

#endif
