/* SPDX-License-Identifier: MIT */
/* The driver and source registries: kinds add themselves from static
 * initialisers (like RTE_MEMPOOL_REGISTER_OPS), the context picks one by name
 * or kind at run time. Function-local statics avoid initialisation-order
 * trouble between translation units. */
#include <mrsync/driver.hpp>
#include <mrsync/source.hpp>

#include <vector>

namespace mrsync {

namespace {
std::vector<DriverFactory> &drivers()
{
	static std::vector<DriverFactory> registry;
	return registry;
}
std::vector<SourceFactory> &sources()
{
	static std::vector<SourceFactory> registry;
	return registry;
}
} // namespace

void register_driver(const DriverFactory &factory)
{
	drivers().push_back(factory);
}

const DriverFactory *find_driver(std::string_view name)
{
	for (const auto &factory : drivers())
		if (name == factory.name)
			return &factory;
	return nullptr;
}

void register_source(const SourceFactory &factory)
{
	sources().push_back(factory);
}

const SourceFactory *find_source(std::uint32_t kind)
{
	for (const auto &factory : sources())
		if (factory.kind == kind)
			return &factory;
	return nullptr;
}

} // namespace mrsync
