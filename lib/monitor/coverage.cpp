/* SPDX-License-Identifier: MIT */
#include "coverage.hpp"

#include <cassert>
#include <iterator>

namespace mrsync::detail {

std::uint32_t Coverage::count_before(std::uint64_t at) const
{
	auto it = counts_.upper_bound(at);
	return it == counts_.begin() ? 0 : std::prev(it)->second;
}

void Coverage::split_at(std::uint64_t at)
{
	counts_.emplace(at, count_before(at)); /* no-op if a segment starts there */
}

void Coverage::normalise(std::uint64_t from, std::uint64_t to) noexcept
{
	/* Only keys in [from, to] can have become equal to their predecessor. */
	auto it = counts_.lower_bound(from);
	std::uint32_t previous = it == counts_.begin() ? 0 : std::prev(it)->second;
	while (it != counts_.end() && it->first <= to) {
		if (it->second == previous) {
			it = counts_.erase(it);
		} else {
			previous = it->second;
			++it;
		}
	}
}

void Coverage::add(Range range)
{
	assert(range.start < range.end);
	/* Only the splits allocate, and a split alone changes no count: if the
	 * second throws, the table still means what it meant. */
	split_at(range.start);
	split_at(range.end);
	for (auto it = counts_.find(range.start); it->first != range.end; ++it)
		++it->second;
	normalise(range.start, range.end);
}

std::vector<Range> Coverage::remove(Range range)
{
	assert(range.start < range.end);
	split_at(range.start);
	split_at(range.end);
	/* Reserve before the first decrement, so nothing throws half-way. */
	const auto first = counts_.find(range.start);
	const auto last = counts_.find(range.end);
	std::vector<Range> released;
	released.reserve(static_cast<std::size_t>(std::distance(first, last)));
	for (auto it = first; it != last; ++it) {
		assert(it->second > 0 && "removing a range that was never added");
		if (it->second == 0 || --it->second > 0)
			continue;
		const std::uint64_t end = std::next(it)->first;
		if (!released.empty() && released.back().end == it->first)
			released.back().end = end;
		else
			released.push_back({it->first, end});
	}
	normalise(range.start, range.end);
	return released;
}

std::vector<Range> Coverage::covered(Range range) const
{
	std::vector<Range> parts;
	if (range.start >= range.end)
		return parts;
	std::uint32_t count = count_before(range.start);
	std::uint64_t at = range.start;
	for (auto it = counts_.upper_bound(range.start);; ++it) {
		const bool last = it == counts_.end() || it->first >= range.end;
		const std::uint64_t next = last ? range.end : it->first;
		if (count > 0 && at < next) {
			if (!parts.empty() && parts.back().end == at)
				parts.back().end = next;
			else
				parts.push_back({at, next});
		}
		if (last)
			break;
		at = it->first;
		count = it->second;
	}
	return parts;
}

std::vector<Range> Coverage::uncovered(Range range) const
{
	std::vector<Range> gaps;
	std::uint64_t at = range.start;
	for (const Range &part : covered(range)) {
		if (at < part.start)
			gaps.push_back({at, part.start});
		at = part.end;
	}
	if (at < range.end)
		gaps.push_back({at, range.end});
	return gaps;
}

} // namespace mrsync::detail
