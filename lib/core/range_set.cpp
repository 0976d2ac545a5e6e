/* SPDX-License-Identifier: MIT */
#include "range_set.hpp"

#include <algorithm>

namespace mrsync::detail {

void RangeSet::add(Range r)
{
	if (r.start >= r.end)
		return;
	/* Absorb every range that overlaps or touches [start, end). */
	auto it = ranges_.upper_bound(r.start);
	if (it != ranges_.begin() && std::prev(it)->second >= r.start)
		--it;
	while (it != ranges_.end() && it->first <= r.end) {
		r.start = std::min(r.start, it->first);
		r.end = std::max(r.end, it->second);
		it = ranges_.erase(it);
	}
	ranges_.emplace(r.start, r.end);
}

void RangeSet::remove(Range r)
{
	if (r.start >= r.end)
		return;
	auto it = ranges_.upper_bound(r.start);
	if (it != ranges_.begin() && std::prev(it)->second > r.start)
		--it;
	while (it != ranges_.end() && it->first < r.end) {
		const Range cut{it->first, it->second};
		it = ranges_.erase(it);
		if (cut.start < r.start)
			ranges_.emplace(cut.start, r.start);
		if (r.end < cut.end)
			ranges_.emplace(r.end, cut.end);
	}
}

std::vector<Range> RangeSet::intersect(Range r) const
{
	std::vector<Range> parts;
	auto it = ranges_.upper_bound(r.start);
	if (it != ranges_.begin() && std::prev(it)->second > r.start)
		--it;
	for (; it != ranges_.end() && it->first < r.end; ++it)
		parts.push_back({std::max(r.start, it->first), std::min(r.end, it->second)});
	return parts;
}

std::vector<Range> subtract(const std::vector<Range> &from, const std::vector<Range> &cut)
{
	std::vector<Range> out;
	std::size_t c = 0;
	for (Range r : from) {
		while (c < cut.size() && cut[c].end <= r.start)
			++c;
		for (std::size_t k = c; k < cut.size() && cut[k].start < r.end; ++k) {
			if (cut[k].start > r.start)
				out.push_back({r.start, cut[k].start});
			r.start = std::max(r.start, cut[k].end);
		}
		if (r.start < r.end)
			out.push_back(r);
	}
	return out;
}

} // namespace mrsync::detail
