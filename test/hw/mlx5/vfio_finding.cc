/* SPDX-License-Identifier: MIT */
/* The hardware test's VFIO mode part (vfio_finding.hpp). */
#include "vfio_finding.hpp"

#include <infiniband/mlx5dv.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <mrsync/driver.hpp>

#include "vfio_mode.hpp" /* drivers/mlx5 */

namespace mrsync::mlx5::hw {
namespace {

struct DeviceListDeleter {
	void operator()(ibv_device **l) const noexcept { ibv_free_device_list(l); }
};
struct ContextDeleter {
	void operator()(ibv_context *c) const noexcept { ibv_close_device(c); }
};
struct PdDeleter {
	void operator()(ibv_pd *p) const noexcept { ibv_dealloc_pd(p); }
};

} // namespace

std::string vfio_mode()
{
	const auto functions = vfio_bound_functions();
	if (functions.empty())
		return "skipped: no Mellanox function bound to vfio-pci";
	std::string answer = std::to_string(functions.size()) + " Mellanox function(s) on vfio-pci; ";
	/* The provider initialises the HCA from user space (firmware init,
	 * pages, ISSI): this is the step that needs the function free of
	 * mlx5_core. */
	mlx5dv_vfio_context_attr attr{};
	attr.pci_name = functions.front().c_str();
	std::unique_ptr<ibv_device *, DeviceListDeleter> list(mlx5dv_get_vfio_device_list(&attr));
	if (!list || !list.get()[0])
		return answer + "mlx5dv_get_vfio_device_list(" + functions.front() + "): " +
		       std::strerror(errno);
	std::unique_ptr<ibv_context, ContextDeleter> ctx(ibv_open_device(list.get()[0]));
	if (!ctx)
		return answer + "the VFIO provider could not open " + functions.front() + ": " +
		       std::strerror(errno);
	std::unique_ptr<ibv_pd, PdDeleter> pd(ibv_alloc_pd(ctx.get()));
	answer += "the VFIO provider opened " + functions.front() +
		  (pd ? " (PD allocated); " : " (no PD); ");
	std::string why = "not registered";
	const DriverFactory *mode = find_driver("mlx5-vfio");
	if (mode && mode->available(why))
		return answer + "mlx5-vfio is available: run its scenarios";
	return answer + why;
}

} // namespace mrsync::mlx5::hw
