/* SPDX-License-Identifier: MIT */
/* The mlx5 driver in VFIO mode (vfio_mode.hpp) and the "mlx5-vfio" driver
 * kind, which on rdma-core 44 explains why it cannot run (docs/mlx5.md). */
#include "vfio_mode.hpp"

#include <dirent.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <mrsync/log.hpp>
#include <mrsync/mlx5_vfio.h>
#include <mrsync/vfio.h>

#include "format.hpp"

namespace mrsync::mlx5 {

using detail::fmt;

/* What providers/mlx5/mlx5_vfio.c (rdma-core 44) offers: DEVX on a VFIO
 * context (mlx5dv_devx_obj_create runs CREATE_MKEY through the provider's
 * command interface), but the VFIO container is opened inside the provider
 * (mlx5_vfio_open_fds) and every IOVA comes from its private allocator
 * (ctx->iova_alloc, which owns the IOMMU's whole range): neither is exported,
 * so drivers/vfio can neither map into the function's container by API nor
 * hold IOVAs the provider will not hand out again. */
const char *const kVfioModeUnavailable =
	"mlx5-vfio: rdma-core 44's mlx5 VFIO provider keeps its VFIO container and "
	"its IOVA allocator private, so an MTT mkey over drivers/vfio's IOVAs cannot "
	"be made through public API (docs/mlx5.md, VFIO mode)";

Result<std::unique_ptr<VfioModeDriver>> VfioModeDriver::create(std::unique_ptr<Device> device,
							       const DriverConfig &iommu,
							       VfioModeOptions options)
{
	const DriverFactory *vfio = find_driver("vfio");
	if (!vfio)
		return make_error(ENOTSUP, "mlx5-vfio: drivers/vfio is not built (linux/vfio.h)");
	if (std::string why; !vfio->available(why))
		return make_error(ENOTSUP, "mlx5-vfio: " + why);
	auto driver = vfio->create(iommu);
	if (!driver)
		return std::move(driver).error();
	return std::unique_ptr<VfioModeDriver>(
		new VfioModeDriver(std::move(device), std::move(driver).value(), options));
}

VfioModeDriver::VfioModeDriver(std::unique_ptr<Device> device, std::unique_ptr<Driver> iommu,
			       VfioModeOptions options)
	: iommu_(std::move(iommu)), device_(std::move(device)), options_(options)
{
}

VfioModeDriver::~VfioModeDriver()
{
	if (abandoned_)
		return;
	for (const auto &[key, reg] : regs_) /* the IOVAs go with iommu_ */
		(void)device_->destroy_mkey(key);
}

Result<Keys> VfioModeDriver::create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
				    std::span<const Extent> translation)
{
	auto iommu = iommu_->create(va, len, access, translation);
	if (!iommu)
		return std::move(iommu).error();
	const mrsync_reg raw{va, len, iommu->lkey, iommu->rkey, nullptr};
	const std::uint64_t iova = mrsync_vfio_iova(&raw, reinterpret_cast<const void *>(va));
	auto key = device_->create_mtt_mkey(va, iova, len, access);
	if (!key) {
		iommu_->destroy(*iommu);
		return std::move(key).error();
	}
	regs_.emplace(*key, Registration{*iommu, va, len});
	return Keys{*key, *key};
}

Result<Keys> VfioModeDriver::map(Keys keys, std::span<const Extent> translation)
{
	auto it = regs_.find(keys.lkey);
	if (it == regs_.end())
		return make_error(EINVAL, fmt("mlx5-vfio map: unknown key %#x", keys.lkey));
	if (options_.test_skip_iommu_rewrite)
		return keys;
	auto iommu = iommu_->map(it->second.iommu, translation);
	if (!iommu)
		return std::move(iommu).error();
	if (*iommu != it->second.iommu) /* drivers/vfio's keys survive map() */
		return make_error(EIO, "mlx5-vfio map: the IOVA moved; the MTT would be stale");
	return keys;
}

void VfioModeDriver::destroy(Keys keys) noexcept
{
	auto it = regs_.find(keys.lkey);
	if (it == regs_.end())
		return;
	if (auto ok = device_->destroy_mkey(it->first); !ok)
		MRSYNC_LOG(warning, "mlx5", "mlx5-vfio: %s", ok.error().message.c_str());
	iommu_->destroy(it->second.iommu);
	regs_.erase(it);
}

void VfioModeDriver::abandon() noexcept
{
	abandoned_ = true;
	device_->abandon();
	iommu_->abandon();
}

Result<std::uint64_t> VfioModeDriver::iova_of(Keys keys) const
{
	auto it = regs_.find(keys.lkey);
	if (it == regs_.end())
		return make_error(ENOENT, fmt("mlx5-vfio: unknown key %#x", keys.lkey));
	const Registration &r = it->second;
	const mrsync_reg raw{r.va, r.len, r.iommu.lkey, r.iommu.rkey, nullptr};
	return mrsync_vfio_iova(&raw, reinterpret_cast<const void *>(r.va));
}

std::vector<std::string> vfio_bound_functions()
{
	std::vector<std::string> found;
	const std::string dir = "/sys/bus/pci/drivers/vfio-pci/";
	DIR *d = opendir(dir.c_str());
	if (!d)
		return found;
	while (dirent *e = readdir(d)) {
		FILE *f = std::fopen((dir + e->d_name + "/vendor").c_str(), "r");
		if (!f)
			continue; /* not a device link */
		char v[16] = {};
		if (std::fgets(v, sizeof v, f) && std::strncmp(v, "0x15b3", 6) == 0)
			found.emplace_back(e->d_name);
		std::fclose(f);
	}
	closedir(d);
	return found;
}

namespace {

bool available(std::string &why)
{
	if (vfio_bound_functions().empty())
		why = "mlx5-vfio: no Mellanox function bound to vfio-pci";
	else
		why = kVfioModeUnavailable;
	return false;
}

/* Validates the arguments (a caller's mistake is named as such), then says
 * why the device side cannot be had on rdma-core 44. */
Result<std::unique_ptr<Driver>> create_driver(const DriverConfig &config)
{
	const auto *p = static_cast<const mrsync_mlx5_vfio_params *>(config.arg);
	if (!p)
		return make_error(EINVAL, "mlx5-vfio: driver_arg must be a struct "
					  "mrsync_mlx5_vfio_params");
	if (p->struct_size < sizeof *p)
		return make_error(EINVAL, fmt("mlx5-vfio: mrsync_mlx5_vfio_params.struct_size %u "
					      "< %zu", p->struct_size, sizeof *p));
	if (p->flags)
		return make_error(EINVAL, fmt("mlx5-vfio: mrsync_mlx5_vfio_params.flags %#x: "
					      "none defined", p->flags));
	if (!p->iommu)
		return make_error(EINVAL, "mlx5-vfio: mrsync_mlx5_vfio_params.iommu is required");
	return make_error(ENOTSUP, kVfioModeUnavailable);
}

const DriverFactory kFactory{
	.name = "mlx5-vfio",
	.available = &available,
	.create = &create_driver,
};

} // namespace

} // namespace mrsync::mlx5

MRSYNC_REGISTER_DRIVER(mrsync::mlx5::kFactory)
