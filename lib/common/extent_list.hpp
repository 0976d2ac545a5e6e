/* SPDX-License-Identifier: MIT */
/* Private, header-only: edits of an extent list in place, in time that
 * grows with what changes, not with the list. Shared by the core's
 * Translation (lib/core/translation.cpp) and the drivers that keep their own
 * copy of a registration's list (drivers/uring): both apply the same change
 * the same way, so the two lists stay equal.
 *
 * A list is sorted, contiguous extents covering [0, length) exactly. No
 * locking: the owner of the list serialises its changes. */
#ifndef MRSYNC_EXTENT_LIST_HPP
#define MRSYNC_EXTENT_LIST_HPP

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include <mrsync/driver.hpp>

namespace mrsync::detail {

/** Index of the first extent of `list` that ends after `offset` (the one
 *  holding it), or list.size(). O(log n). */
inline std::size_t extent_holding(std::span<const Extent> list, std::uint64_t offset) noexcept
{
	return std::size_t(std::upper_bound(list.begin(), list.end(), offset,
					    [](std::uint64_t o, const Extent &e) {
						    return o < e.offset + e.length;
					    }) -
			   list.begin());
}

/** Index of the first extent of `list` that starts at or after `offset`. */
inline std::size_t extent_from(std::span<const Extent> list, std::uint64_t offset) noexcept
{
	return std::size_t(std::lower_bound(list.begin(), list.end(), offset,
					    [](const Extent &e, std::uint64_t o) {
						    return e.offset < o;
					    }) -
			   list.begin());
}

/* Whether `next` continues `prev` as one extent: the same backing, adjacent
 * offsets (backings map virtual addresses one to one, so that is enough).
 * The one merge rule of every extent list. */
inline bool extends(const Extent &prev, const Extent &next) noexcept
{
	return prev.backing == next.backing && prev.offset + prev.length == next.offset;
}

/**
 * Serves [offset, offset + len) of `list` by `with` (sorted extents covering
 * that range exactly; len > 0, inside the list). `displaced(backing, bytes)`
 * is called for each extent that loses bytes (kNoBacking ones too). Adjacent extents of one
 * backing merge (a backing maps virtual addresses one to one, so adjacency is
 * enough), so the list stays the shortest one. O(log n + |with|) plus one
 * move of the list's tail when the number of extents changes.
 */
template <class Displaced>
void splice_extents(std::vector<Extent> &list, std::uint64_t offset, std::uint64_t len,
		    std::span<const Extent> with, Displaced &&displaced)
{
	const std::uint64_t end = offset + len;
	const std::size_t lo = extent_holding(list, offset); /* first one touched */
	const std::size_t hi = extent_from(list, end);       /* first one after */
	if (len == 0 || lo >= hi)
		return; /* nothing, or outside the list: the caller's bug */
	/* The neighbours join the rewritten window, so a new extent can merge
	 * with them. */
	const std::size_t from = lo > 0 ? lo - 1 : lo;
	const std::size_t to = hi < list.size() ? hi + 1 : hi;
	std::vector<Extent> mid;
	mid.reserve(with.size() + 4);
	auto push = [&mid](Extent e) {
		if (e.length == 0)
			return;
		if (!mid.empty() && extends(mid.back(), e))
			mid.back().length += e.length;
		else
			mid.push_back(e);
	};
	if (from < lo)
		push(list[from]);
	if (list[lo].offset < offset)
		push({list[lo].offset, offset - list[lo].offset, list[lo].backing});
	for (std::size_t i = lo; i < hi; ++i) {
		const Extent &e = list[i];
		const std::uint64_t lost =
			std::min(end, e.offset + e.length) - std::max(offset, e.offset);
		if (lost)
			displaced(e.backing, lost);
	}
	for (const Extent &w : with)
		push(w);
	if (const Extent &last = list[hi - 1]; last.offset + last.length > end)
		push({end, last.offset + last.length - end, last.backing});
	if (hi < to)
		push(list[hi]);
	/* Replace list[from, to) by mid: overwrite, then erase or insert the
	 * difference (one move of the tail at most). */
	const std::size_t old_n = to - from;
	const std::size_t common = std::min(old_n, mid.size());
	std::copy_n(mid.begin(), common, list.begin() + std::ptrdiff_t(from));
	if (mid.size() < old_n)
		list.erase(list.begin() + std::ptrdiff_t(from + common),
			   list.begin() + std::ptrdiff_t(to));
	else
		list.insert(list.begin() + std::ptrdiff_t(to), mid.begin() + std::ptrdiff_t(common),
			    mid.end());
}

} // namespace mrsync::detail

#endif
