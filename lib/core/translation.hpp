/* SPDX-License-Identifier: MIT */
/* Private. A registration's translation as the device sees it: sorted extents
 * covering [0, length) exactly, each served by a backing or invalid. Owned by
 * one region, changed only under the context lock. */
#ifndef MRSYNC_TRANSLATION_HPP
#define MRSYNC_TRANSLATION_HPP

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/source.hpp>

namespace mrsync::detail {

class Translation {
public:
	/** All of [0, length) invalid. */
	explicit Translation(std::uint64_t length);

	/** [0, length) served by `extents` (sorted, covering it exactly, as a
	 *  pin returns them): adopts the vector, merging as replace() does,
	 *  instead of splicing it into an all-invalid one -- a new
	 *  registration's translation without a second allocation. Extents that
	 *  do not tile [0, length) are spliced in as replace() would. */
	static Translation of(std::uint64_t length, std::vector<Extent> &&extents);

	std::span<const Extent> extents() const noexcept { return extents_; }
	/** The extents that overlap [offset, offset + len) (whole, not cut),
	 *  found by binary search: what a lookup of that range walks. */
	std::span<const Extent> extents_in(std::uint64_t offset, std::uint64_t len) const noexcept;
	std::uint64_t length() const noexcept { return length_; }
	/** Bytes without a backing: a running sum, O(1). */
	std::uint64_t invalid_bytes() const noexcept { return invalid_bytes_; }

	/** Offsets in [offset, offset + len) that have no backing, as ranges of
	 *  offsets, merged. O(log n + the extents of the range). */
	std::vector<Range> invalid_runs(std::uint64_t offset, std::uint64_t len) const;

	/** Each run of adjacent extents on one backing, with its bytes: a backing
	 *  the translation uses in several places comes once per run, so callers
	 *  add up. Allocates nothing (Update::destroy is noexcept). */
	void for_each_backing(const std::function<void(BackingId, std::uint64_t)> &fn) const;

	/**
	 * Serves [offset, offset + len) by `with` (sorted extents covering that
	 * range exactly). `displaced(backing, bytes)` is called for each backing
	 * that loses bytes. Adjacent extents of one backing merge (backings map
	 * virtual addresses one to one, so adjacency is enough). In place:
	 * O(log n + the extents of the range) and one move of the tail.
	 */
	void replace(std::uint64_t offset, std::uint64_t len, std::span<const Extent> with,
		     const std::function<void(BackingId, std::uint64_t)> &displaced);

private:
	Translation() = default; /* for of() */

	std::uint64_t length_ = 0;
	std::uint64_t invalid_bytes_ = 0; /* kept by replace() */
	std::vector<Extent> extents_;
};

} // namespace mrsync::detail

#endif
