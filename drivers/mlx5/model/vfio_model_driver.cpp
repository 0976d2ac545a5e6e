/* SPDX-License-Identifier: MIT */
/* Registers the "mlx5-vfio-model" driver kind (vfio_model_driver.hpp). */
#include "vfio_model_driver.hpp"

#include <cerrno>

#include <mrsync/mrsync.hpp>

namespace mrsync::mlx5 {

VfioModeDriver &vfio_mode_driver_of(mrsync_ctx *ctx)
{
	return dynamic_cast<VfioModeDriver &>(::mrsync::driver_of(ctx));
}

MttMkeyModel &mtt_model_of(mrsync_ctx *ctx)
{
	return dynamic_cast<MttMkeyModel &>(vfio_mode_driver_of(ctx).device());
}

namespace {

bool available(std::string &why)
{
	const DriverFactory *vfio = find_driver("vfio");
	if (!vfio) {
		why = "mlx5-vfio-model: drivers/vfio is not built";
		return false;
	}
	return vfio->available(why);
}

Result<std::unique_ptr<Driver>> create(const DriverConfig &config)
{
	const auto *arg = static_cast<const VfioModelArg *>(config.arg);
	if (!arg || !arg->dma)
		return make_error(EINVAL, "mlx5-vfio-model: driver_arg must be a VfioModelArg "
					  "with a DMA engine");
	auto driver = VfioModeDriver::create(std::make_unique<MttMkeyModel>(arg->dma),
					     DriverConfig{config.entry_size, &arg->iommu},
					     arg->mode);
	if (!driver)
		return std::move(driver).error();
	return std::unique_ptr<Driver>(std::move(driver).value());
}

const DriverFactory kFactory{
	.name = "mlx5-vfio-model",
	.available = &available,
	.create = &create,
};

} // namespace

} // namespace mrsync::mlx5

MRSYNC_REGISTER_DRIVER(mrsync::mlx5::kFactory)
