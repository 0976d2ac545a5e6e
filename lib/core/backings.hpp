/* SPDX-License-Identifier: MIT */
/* Private. Backings: every unit the driver pinned for this context, with the
 * bytes of translations that still use it. A backing nobody uses is unpinned
 * only after a fence (release_unused), which is the ordering the driver
 * contract asks for; bytes a backing pins that no translation uses any more
 * are "stale" and are what compaction reclaims. Owns the pins: whatever is
 * left is unpinned on destruction. Context lock held for every call. */
#ifndef MRSYNC_BACKINGS_HPP
#define MRSYNC_BACKINGS_HPP

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/source.hpp>

namespace mrsync::detail {

class Backings {
public:
	explicit Backings(Driver &driver) : driver_(&driver) {}
	Backings(const Backings &) = delete;
	Backings &operator=(const Backings &) = delete;
	~Backings();

	/** What pin() does where the range cannot be pinned (not mapped). */
	enum class Holes {
		fail,       /**< EFAULT: a new registration must be mapped entirely */
		invalidate, /**< invalid extents: a resync maps what is there */
	};

	/**
	 * Pins [va, va + len) as few backings as possible, split at the driver's
	 * largest backing (and, with Holes::invalidate, around the parts that are
	 * not mapped writable, which come back as invalid extents). Offsets are
	 * relative to `base`. Other errors (memlock, no free backing) fail the
	 * call; what was pinned is released by the next release_unused().
	 */
	Result<std::vector<Extent>> pin(std::uint64_t base, std::uint64_t va, std::uint64_t len,
					Holes holes);

	void use(BackingId id, std::uint64_t bytes);
	void unuse(BackingId id, std::uint64_t bytes);

	/** Unpins every backing no translation uses. Call only after a fence
	 *  that followed the maps which removed their last uses. */
	std::size_t release_unused() noexcept;

	/** Whether some backing no translation uses waits for release_unused()
	 *  (forgets the candidates used again meanwhile). */
	bool release_pending() noexcept;

	/** Backings that pin bytes no translation uses. */
	std::vector<BackingId> with_stale_bytes() const;
	bool has_stale_bytes(BackingId id) const;

	std::uint64_t pinned_bytes() const noexcept { return pinned_bytes_; }
	std::uint64_t stale_bytes() const noexcept { return stale_bytes_; }
	std::size_t count() const noexcept { return entries_.size(); }

	/** Fork child: the driver dropped its kernel objects; forget ours. */
	void abandon() noexcept
	{
		entries_.clear();
		unused_.clear();
		pinned_bytes_ = 0;
		stale_bytes_ = 0;
	}

private:
	struct Entry {
		std::uint64_t va;
		std::uint64_t len;
		std::uint64_t used; /* bytes of translations served by it */
	};

	Result<BackingId> pin_one(std::uint64_t va, std::uint64_t len);

	Driver *driver_;
	std::unordered_map<BackingId, Entry> entries_;
	std::vector<BackingId> unused_; /* candidates for release_unused() */
	std::uint64_t pinned_bytes_ = 0;
	/* The sum of stale(entry) over entries_, kept as they change: a resync
	 * asks after every pass, and a fragmented registration has a backing
	 * per replaced page. */
	std::uint64_t stale_bytes_ = 0;
	static std::uint64_t stale(const Entry &e) noexcept { return e.len - std::min(e.len, e.used); }
	/* Applies `change` to `e`, keeping stale_bytes_ right. */
	template <typename F>
	void update(Entry &e, F change)
	{
		stale_bytes_ -= stale(e);
		change(e);
		stale_bytes_ += stale(e);
	}
};

} // namespace mrsync::detail

#endif
