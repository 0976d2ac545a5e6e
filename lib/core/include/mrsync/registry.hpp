/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The registry of pluggable kinds -- drivers (driver.hpp) and event sources
 * (source.hpp) -- as DPDK's RTE_MEMPOOL_REGISTER_OPS: each kind adds its
 * factory from a static initialiser (MRSYNC_REGISTER_FACTORY), and the
 * context looks one up by name or kind at run time.
 *
 * One registry per factory type. Its storage is defined once, in the
 * library (registry.cpp instantiates it for DriverFactory and SourceFactory),
 * and reached through a function-local static, so registrations from any
 * translation unit work whatever the order of static initialisation.
 */
#ifndef MRSYNC_REGISTRY_HPP
#define MRSYNC_REGISTRY_HPP

#include <string_view>
#include <type_traits>
#include <vector>

namespace mrsync {

/* Exported from libmrsync (lib/libmrsync.map): one list per process, which
 * libmrsync_dpdk and out-of-tree drivers register into. */
#pragma GCC visibility push(default)
template <class Factory>
class Registry {
public:
	/** Adds a kind. Thread safety: static initialisation (or one thread
	 *  before any find()); kinds are never removed. */
	static void add(const Factory &factory) { factories().push_back(factory); }

	/** @return the first kind for which `match(factory)` is true, or
	 *  nullptr. The pointer stays valid for the life of the process.
	 *  Thread safety: any thread, once registration is over. */
	template <class Match>
	static const Factory *find(Match &&match)
	{
		for (const Factory &factory : factories())
			if (match(factory))
				return &factory;
		return nullptr;
	}

	/** @return the kind called `name`, or nullptr. Thread safety: as find(). */
	static const Factory *named(std::string_view name)
	{
		return find([name](const Factory &factory) { return name == factory.name; });
	}

private:
	/* Defined in registry.cpp only: one list per process. */
	static std::vector<Factory> &factories();
};
#pragma GCC visibility pop

} // namespace mrsync

#define MRSYNC_REGISTRY_CONCAT_(a, b) a##b
#define MRSYNC_REGISTRY_NAME_(line) MRSYNC_REGISTRY_CONCAT_(mrsync_registered_, line)

/** Registers `factory` (a DriverFactory or SourceFactory) at start-up. */
#define MRSYNC_REGISTER_FACTORY(factory)                                                \
	namespace {                                                                     \
	[[maybe_unused]] const bool MRSYNC_REGISTRY_NAME_(__LINE__) =                   \
		(::mrsync::Registry<std::remove_cvref_t<decltype(factory)>>::add(factory), \
		 true);                                                                 \
	}

#endif
