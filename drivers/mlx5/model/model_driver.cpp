/* SPDX-License-Identifier: MIT */
/* Registers the "mlx5-model" driver kind (model_driver.hpp). */
#include "model_driver.hpp"

#include <mrsync/mrsync.hpp>

#include "dma_engine.hpp"

namespace mrsync::mlx5 {

Mlx5Driver &driver_of_model_ctx(mrsync_ctx *ctx)
{
	return dynamic_cast<Mlx5Driver &>(::mrsync::driver_of(ctx));
}

Mlx5Model &model_of(mrsync_ctx *ctx)
{
	return dynamic_cast<Mlx5Model &>(driver_of_model_ctx(ctx).device());
}

namespace {

bool available(std::string &why)
{
	return dma::Engine::available(why);
}

Result<std::unique_ptr<Driver>> create(const DriverConfig &config)
{
	const ModelDriverArg defaults;
	const auto *arg = config.arg ? static_cast<const ModelDriverArg *>(config.arg) : &defaults;
	auto model = Mlx5Model::create(arg->model);
	if (!model)
		return std::move(model).error();
	auto driver = Mlx5Driver::create(std::move(model).value(), arg->driver);
	if (!driver)
		return std::move(driver).error();
	return std::unique_ptr<Driver>(std::move(driver).value());
}

const DriverFactory kFactory{
	.name = "mlx5-model",
	.available = &available,
	.create = &create,
};

} // namespace

} // namespace mrsync::mlx5

MRSYNC_REGISTER_DRIVER(mrsync::mlx5::kFactory)
