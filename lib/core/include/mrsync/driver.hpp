/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The driver contract (docs/design.md, "The driver contract"): a driver owns the
 * device's translation table, the core owns the policy.
 *
 * A registration's translation is a list of extents (offset, length -> backing),
 * like a KLM list. A backing is a pinned unit (an io_uring slot, a chunk MR).
 * One owner in the core (lib/core/updater.hpp) makes every change, in this
 * order and never otherwise:
 *   pin(new pages) -> create/map(registration, extents) -> fence() -> unpin(replaced)
 *
 * Which operation does which steps:
 *  - a lookup that creates a registration, or covers entries that are
 *    invalid, pins the pages and creates/maps them (no fence is due: nothing
 *    valid was replaced);
 *  - a resync pins nothing. An event may arrive before its change is complete
 *    (the kernel module reports at invalidate_range_start, userfaultfd reports
 *    MADV_DONTNEED before the zap), so a pin taken then could take the very
 *    pages being replaced. It maps the changed entries to kNoBacking (the
 *    device must refuse DMA there), fences, and unpins the backings nobody
 *    uses any more; the next lookup that covers them re-pins the new pages
 *    (docs/design.md, "Pin guards");
 *  - compaction pins the current pages of valid entries again, maps, fences,
 *    unpins the old backings; eviction destroys, fences, unpins;
 *  - a fork child abandons everything and creates afresh.
 * Every pin is preceded by an event source's prepare_pin() (source.hpp).
 *
 * Thread safety: the core serialises every call below under its context lock.
 * A driver's own data path (DMA submission) may run concurrently with map() and
 * must see either the old or the new translation, never a torn one.
 */
#ifndef MRSYNC_DRIVER_HPP
#define MRSYNC_DRIVER_HPP

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <mrsync/registry.hpp>
#include <mrsync/result.hpp>
#include <mrsync/source.hpp>

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)

namespace mrsync {

/** Names one pinned unit inside a driver. */
using BackingId = std::uint32_t;
/** The backing of an invalid extent: the device must refuse DMA there. */
inline constexpr BackingId kNoBacking = UINT32_MAX;

/** Part of a registration's translation: [offset, offset + length) of the
 *  registration is served by `backing`, at the same virtual addresses. */
struct Extent {
	std::uint64_t offset = 0;
	std::uint64_t length = 0;
	BackingId backing = kNoBacking;

	friend bool operator==(const Extent &, const Extent &) = default;
};

/** Device registration keys (an RDMA lkey/rkey pair). */
struct Keys {
	std::uint32_t lkey = 0;
	std::uint32_t rkey = 0;

	friend bool operator==(const Keys &, const Keys &) = default;
};

struct DriverCaps {
	std::uint64_t entry_granularity = 4096; /**< smallest rewritable entry */
	std::uint64_t max_backing_bytes = 0;    /**< largest single backing */
	std::uint32_t max_backings = 0;         /**< backings pinned at once */
	bool keys_survive_map = true;           /**< false: map() may change keys */
	/** false: a registration with an invalid extent serves no DMA at all
	 *  (verbs without ODP: one MR covers the whole area), so the core takes
	 *  it out of the hit path until a lookup has re-pinned every hole. */
	bool holes_ok = true;
};

class Driver {
public:
	virtual ~Driver() = default;

	virtual std::string_view name() const noexcept = 0;
	virtual DriverCaps caps() const noexcept = 0;

	/**
	 * Pins [va, va + len) and makes it addressable by the device as one unit.
	 * @return the backing, or EFAULT (not mapped / not pinnable), ENOMEM
	 *         (RLIMIT_MEMLOCK), ENOSPC (no free backing), with a message.
	 */
	virtual Result<BackingId> pin(std::uint64_t va, std::uint64_t len) = 0;

	/** Releases a backing. Called only after a fence() that followed the
	 *  map() which removed the backing's last use. */
	virtual void unpin(BackingId backing) noexcept = 0;

	/** Creates a device registration for [va, va + len) served by `translation`
	 *  (sorted extents covering [0, len) exactly). */
	virtual Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
				    std::span<const Extent> translation) = 0;

	/** Replaces a registration's whole translation (extents may be
	 *  kNoBacking: the device must refuse DMA there from now on). Returns
	 *  its keys: the same ones when caps().keys_survive_map. On failure the
	 *  device keeps the old translation and the core retires the
	 *  registration -- after revoking its keys, before the fence that lets
	 *  the replaced pages go: map() again with every entry kNoBacking (so a
	 *  driver must accept an all-invalid translation), or destroy() if that
	 *  is refused too. */
	virtual Result<Keys> map(Keys keys, std::span<const Extent> translation) = 0;

	/** Destroys a registration. No DMA may use its keys afterwards. */
	virtual void destroy(Keys keys) noexcept = 0;

	/** Returns once no DMA issued before the call can use an entry replaced
	 *  by a map() issued before the call. */
	virtual Status fence() = 0;

	/** The process is a fork child: the driver's kernel objects belong to the
	 *  parent. Drop them without touching them (close fds only); the object
	 *  is destroyed right after and must not unregister anything. */
	virtual void abandon() noexcept = 0;

	/**
	 * map(), told what changed: `translation` is the registration's whole
	 * new list, and only the entries at the offsets of `changed` (sorted,
	 * disjoint [start, end) ranges inside the registration) differ from the
	 * list the device had. A driver that keeps its own copy of the list
	 * rewrites just those entries, so a resync costs what changed, not the
	 * registration's size (issue 14). Same result and failure rule as map().
	 * The default forgets `changed` and calls map(): a driver that does not
	 * override it keeps working unchanged.
	 * Thread safety: as map() (the core serialises it under its lock).
	 */
	virtual Result<Keys> map_changed(Keys keys, std::span<const Extent> translation,
					 std::span<const Range> changed)
	{
		(void)changed;
		return map(keys, translation);
	}

	/**
	 * Entry pressure (issue 12). A driver whose keys hold a bounded number
	 * of entries each (mlx5: 52 KLMs per child key) names the parts of a
	 * registration that `translation` would leave close to that bound, as
	 * sorted, disjoint [start, end) offset ranges. Before the core maps
	 * such a translation it re-pins the valid entries of each range as few
	 * backings as it can (compaction), in the same update, so that the map
	 * fits and the keys stay; the old backings go after the update's
	 * fence. Holes cannot be coalesced, so a range may stay crowded: the
	 * core re-pins only runs of several backings, and the driver should
	 * report early enough (mlx5: at 40 of 52) that the map still fits.
	 * The default reports none. Must not change the device.
	 * Thread safety: called under the context lock, right before map_changed().
	 */
	virtual std::vector<Range> crowded(Keys keys, std::span<const Extent> translation) const
	{
		(void)keys;
		(void)translation;
		return {};
	}
};

/** What the context passes to a driver factory. */
struct DriverConfig {
	std::uint64_t entry_size = 4096;
	const void *arg = nullptr; /**< mrsync_params::driver_arg, driver-specific */
};

/** A driver kind, registered at start-up by MRSYNC_REGISTER_DRIVER. */
struct DriverFactory {
	const char *name;
	/** Probes at run time; on false, `why` says what is missing. */
	bool (*available)(std::string &why);
	Result<std::unique_ptr<Driver>> (*create)(const DriverConfig &config);
};

extern template class Registry<DriverFactory>;

/** The registered kind called `name`, or nullptr. */
inline const DriverFactory *find_driver(std::string_view name)
{
	return Registry<DriverFactory>::named(name);
}

} // namespace mrsync
#pragma GCC visibility pop

#define MRSYNC_REGISTER_DRIVER(factory) MRSYNC_REGISTER_FACTORY(factory)

#endif
