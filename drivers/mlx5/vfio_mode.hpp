/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/mlx5 (and its tests): the mlx5 driver in VFIO mode
 * (include/mrsync/mlx5_vfio.h, docs/mlx5.md "VFIO mode"). It composes two
 * things and copies neither:
 *  - drivers/vfio, reached through its driver factory ("vfio"): IOVA
 *    allocation, IOMMU mapping, the per-entry diff of a resync, the fence
 *    (type1's unmap returns after the IOTLB flush). Its key is the IOVA;
 *  - a Device's MTT mkey (Device::create_mtt_mkey), created once per
 *    registration over that registration's stable IOVA range.
 * A resync is drivers/vfio's map(): unmap/map at the same IOVAs. The mkey,
 * its key and its MTT never change, so no UMR is ever posted.
 *
 * Thread safety: as every Driver, the core serialises the calls under its
 * context lock; the device's data path runs concurrently (the IOMMU and the
 * MTT are read by the device, never torn: an entry is unmapped or mapped).
 */
#ifndef MRSYNC_MLX5_VFIO_MODE_HPP
#define MRSYNC_MLX5_VFIO_MODE_HPP

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <mrsync/driver.hpp>

#include "device.hpp"

namespace mrsync::mlx5 {

struct VfioModeOptions {
	/** Negative control only: map() leaves the IOMMU as it is (the keys
	 *  stay, the replaced pages stay mapped at their IOVAs): DMA through
	 *  the key lands in the replaced page and the application loses it. */
	bool test_skip_iommu_rewrite = false;
};

class VfioModeDriver final : public Driver {
public:
	/** Builds the driver on `device` with drivers/vfio's driver made from
	 *  `iommu` (its arg: a struct mrsync_vfio_params).
	 *  @return the driver, or the vfio driver's error (ENOTSUP if it is
	 *          not built or not available here, with why). */
	static Result<std::unique_ptr<VfioModeDriver>> create(std::unique_ptr<Device> device,
							      const DriverConfig &iommu,
							      VfioModeOptions options = {});
	~VfioModeDriver() override;

	std::string_view name() const noexcept override { return "mlx5-vfio"; }
	/** drivers/vfio's: keys survive map(), holes are fine (they fault). */
	DriverCaps caps() const noexcept override { return iommu_->caps(); }
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override
	{
		return iommu_->pin(va, len);
	}
	void unpin(BackingId backing) noexcept override { iommu_->unpin(backing); }
	/** An IOVA range and its IOMMU entries, then the MTT mkey over it. */
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> translation) override;
	/** drivers/vfio's map() at the registration's IOVAs; the mkey stays. */
	Result<Keys> map(Keys keys, std::span<const Extent> translation) override;
	/** The mkey first (no DMA through it any more), then the IOVAs. */
	void destroy(Keys keys) noexcept override;
	/** Each unmap was the fence: drivers/vfio's fence(). */
	Status fence() override { return iommu_->fence(); }
	void abandon() noexcept override;

	Device &device() noexcept { return *device_; }
	/** The IOVA range's start of the registration `keys` names (tests, the
	 *  hardware test), or ENOENT. */
	Result<std::uint64_t> iova_of(Keys keys) const;

private:
	VfioModeDriver(std::unique_ptr<Device> device, std::unique_ptr<Driver> iommu,
		       VfioModeOptions options);

	struct Registration {
		Keys iommu; /* drivers/vfio's keys: the IOVA */
		std::uint64_t va = 0, len = 0;
	};

	/* Declared first, destroyed last: the IOVAs are unmapped only after
	 * the device's keys over them are gone. */
	std::unique_ptr<Driver> iommu_;
	std::unique_ptr<Device> device_;
	const VfioModeOptions options_;
	std::map<std::uint32_t, Registration> regs_; /* by mkey */
	bool abandoned_ = false;
};

/** The PCI addresses of Mellanox (vendor 0x15b3) functions bound to
 *  vfio-pci, from sysfs. Thread safety: any thread. */
std::vector<std::string> vfio_bound_functions();

/** Why the "mlx5-vfio" driver cannot run on rdma-core 44 (one sentence). */
extern const char *const kVfioModeUnavailable;

} // namespace mrsync::mlx5

#endif
