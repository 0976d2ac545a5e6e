/* SPDX-License-Identifier: MIT */
/* The storage of the driver and source registries (mrsync/registry.hpp):
 * one list per factory type for the whole process, created on first use so
 * that static initialisers in any translation unit can register. */
#include <mrsync/driver.hpp>
#include <mrsync/registry.hpp>
#include <mrsync/source.hpp>

namespace mrsync {

template <class Factory>
std::vector<Factory> &Registry<Factory>::factories()
{
	static std::vector<Factory> registered;
	return registered;
}

template class Registry<DriverFactory>;
template class Registry<SourceFactory>;

} // namespace mrsync
