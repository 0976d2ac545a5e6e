/* SPDX-License-Identifier: MIT */
/* Private. The one owner of the driver sequence (driver.hpp):
 *
 *     pin(new pages) -> create / map(translation) -> fence() -> unpin(replaced)
 *
 * Every change of what a device translates -- a new registration, a re-pin,
 * an invalidation, a compaction, an eviction, the fork rebuild -- is one
 * Update: it pins through Backings, applies new extents to the region's
 * Translation, the driver and the page table (which follows the device and
 * never leads it), and ends in finish(), the single fence-then-release step.
 * The destructor finishes an update nobody finished, so no path can leave
 * replaced pages pinned without the fence or unpin them before it.
 *
 * Context lock held for the whole life of an Update. */
#ifndef MRSYNC_UPDATER_HPP
#define MRSYNC_UPDATER_HPP

#include <cstdint>
#include <span>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/source.hpp>

#include "backings.hpp"

namespace mrsync::detail {

class Context;
struct Region;

class Update {
public:
	explicit Update(Context &ctx) noexcept : ctx_(ctx) {}
	~Update();
	Update(const Update &) = delete;
	Update &operator=(const Update &) = delete;

	/** Pins [va, va + len) but for `skip` (sorted, inside it; those come
	 *  back as invalid extents, as do holes with Holes::invalidate), offsets
	 *  relative to `base`. On failure, what was pinned waits for finish(). */
	Result<std::vector<Extent>> pin(std::uint64_t base, std::uint64_t va, std::uint64_t len,
					std::span<const Range> skip, Backings::Holes holes);

	/** Pins as above and creates the device registration of `r` (whose
	 *  start and size are set) over the result: r's translation, keys and
	 *  has_invalid on success, r untouched on failure (the pins taken are
	 *  released by finish()). The page table is the caller's to claim. */
	Status create(Region &r, std::uint32_t access, std::span<const Range> skip,
		      Backings::Holes holes);

	/** Serves [offset, offset + len) of `r` by `extents`: the page table
	 *  drops what goes invalid, the translation and the driver map change,
	 *  the page table takes what became valid. A device that refused the
	 *  map keeps the old translation, so `r` is retired (its holders' DMA
	 *  fails at worst) and the error returned. */
	Status apply(Region &r, std::uint64_t offset, std::uint64_t len,
		     std::span<const Extent> extents);

	/** apply() of "no backing" to every run of `runs` (offsets in `r`),
	 *  with one device map for all of them: a resync that invalidates n
	 *  runs of a registration maps once, not n times; the map names the
	 *  n runs (map_changed), so a driver rewrites just those. Same failure
	 *  rule as apply(). */
	Status invalidate(Region &r, std::span<const Range> runs);

	/** Destroys `r`'s device registration (unless `device_gone`: a fork
	 *  child's, which is the parent's) and gives up its uses of backings. */
	void destroy(Region &r, bool device_gone) noexcept;

	/** The page table around a device change: invalid extents leave it
	 *  before the map, valid ones join it after (publish fills free slots). */
	void unpublish(Region &r, std::span<const Extent> extents) noexcept;
	void publish(Region &r, std::span<const Extent> extents) noexcept;

	/**
	 * The last step of every update: when a map or destroy replaced a
	 * valid entry, or some backing waits to be unpinned (its last use
	 * replaced, or pinned for a step that failed), fence the device, then
	 * unpin what no translation uses. A failed fence unpins nothing: the
	 * pins stay counted and the next update retries.
	 * @return the fence's error, else success (also when no fence was due).
	 */
	Status finish();

	/** Fork child: the device is the parent's, nothing may be fenced. */
	void abandon() noexcept { finished_ = true; }

private:
	/* apply() in two halves: the translation and the page table first
	 * (any number of times), then one device map for all of it. */
	void change(Region &r, std::uint64_t offset, std::uint64_t len,
		    std::span<const Extent> extents);
	Status commit(Region &r, std::span<const Extent> published);
	/* Before a map: re-pins the runs of several backings inside what the
	 * driver reports crowded (Driver::crowded; compaction.cpp). */
	void relieve_crowding(Region &r);

	void report_key_change(const Region &r, Keys old_keys, Keys new_keys);
	/* After a refused map: makes the device refuse `keys` before this
	 * update's fence (updater.cpp says why). */
	void revoke(Region &r, Keys keys) noexcept;

	Context &ctx_;
	/* Offsets of r whose entries change() rewrote since the last commit:
	 * what the driver's map_changed rewrites. */
	std::vector<Range> changed_;
	bool replaced_ = false; /* a valid device entry was replaced */
	bool finished_ = false;
};

} // namespace mrsync::detail

#endif
