/* SPDX-License-Identifier: MIT */
/* Every query and change here costs what the range asked about touches
 * (binary search, then the extents inside it), never the whole list: a
 * registration a resync fragmented into thousands of extents must not make
 * the next one-page change cost thousands (issue 14). */
#include "translation.hpp"

#include <algorithm>

#include "extent_list.hpp"

namespace mrsync::detail {

Translation::Translation(std::uint64_t length)
	: length_(length), invalid_bytes_(length), extents_{Extent{0, length, kNoBacking}}
{
}

Translation Translation::of(std::uint64_t length, std::vector<Extent> &&extents)
{
	std::uint64_t at = 0;
	for (const Extent &e : extents) {
		if (e.offset != at)
			break;
		at += e.length;
	}
	if (at != length || length == 0) { /* not a tiling: splice it in */
		Translation spliced(length);
		spliced.replace(0, length, extents, [](BackingId, std::uint64_t) {});
		return spliced;
	}
	Translation t;
	t.length_ = length;
	std::size_t n = 0;
	for (const Extent &e : extents) {
		if (e.length == 0)
			continue;
		if (e.backing == kNoBacking)
			t.invalid_bytes_ += e.length;
		if (n && extends(extents[n - 1], e))
			extents[n - 1].length += e.length;
		else
			extents[n++] = e;
	}
	extents.resize(n);
	t.extents_ = std::move(extents);
	return t;
}

std::span<const Extent> Translation::extents_in(std::uint64_t offset,
						std::uint64_t len) const noexcept
{
	const std::span<const Extent> all = extents_;
	const std::size_t lo = extent_holding(all, offset);
	const std::size_t hi = std::max(lo, extent_from(all, offset + len));
	return all.subspan(lo, hi - lo);
}

std::vector<Range> Translation::invalid_runs(std::uint64_t offset, std::uint64_t len) const
{
	std::vector<Range> runs;
	const std::uint64_t end = offset + len;
	for (std::size_t i = extent_holding(extents_, offset);
	     i < extents_.size() && extents_[i].offset < end; ++i) {
		const Extent &e = extents_[i];
		if (e.backing != kNoBacking)
			continue;
		const std::uint64_t s = std::max(offset, e.offset);
		const std::uint64_t t = std::min(end, e.offset + e.length);
		if (!runs.empty() && runs.back().end == s)
			runs.back().end = t;
		else
			runs.push_back({s, t});
	}
	return runs;
}

void Translation::for_each_backing(
	const std::function<void(BackingId, std::uint64_t)> &fn) const
{
	/* Runs, not distinct backings: summing per backing took a map node per
	 * backing (an allocation in Update::destroy, which must not fail, and a
	 * tenth of a miss that evicts), and every caller only adds up. */
	BackingId run = kNoBacking;
	std::uint64_t bytes = 0;
	for (const auto &e : extents_) {
		if (e.backing == run) {
			bytes += e.length;
			continue;
		}
		if (run != kNoBacking)
			fn(run, bytes);
		run = e.backing;
		bytes = e.length;
	}
	if (run != kNoBacking)
		fn(run, bytes);
}

void Translation::replace(std::uint64_t offset, std::uint64_t len, std::span<const Extent> with,
			  const std::function<void(BackingId, std::uint64_t)> &displaced)
{
	splice_extents(extents_, offset, len, with, [&](BackingId b, std::uint64_t n) {
		if (b == kNoBacking)
			invalid_bytes_ -= n;
		else
			displaced(b, n);
	});
	for (const Extent &w : with)
		if (w.backing == kNoBacking)
			invalid_bytes_ += w.length;
}

} // namespace mrsync::detail
