/* SPDX-License-Identifier: MIT */
#include "translation.hpp"

#include <algorithm>
#include <map>

namespace mrsync::detail {

Translation::Translation(std::uint64_t length)
	: length_(length), extents_{Extent{0, length, kNoBacking}}
{
}

std::uint64_t Translation::invalid_bytes() const noexcept
{
	std::uint64_t bytes = 0;
	for (const auto &e : extents_)
		if (e.backing == kNoBacking)
			bytes += e.length;
	return bytes;
}

std::vector<Range> Translation::invalid_runs(std::uint64_t offset, std::uint64_t len) const
{
	std::vector<Range> runs;
	const std::uint64_t end = offset + len;
	for (const auto &e : extents_) {
		const std::uint64_t s = std::max(offset, e.offset);
		const std::uint64_t t = std::min(end, e.offset + e.length);
		if (s >= t || e.backing != kNoBacking)
			continue;
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
	std::map<BackingId, std::uint64_t> bytes;
	for (const auto &e : extents_)
		if (e.backing != kNoBacking)
			bytes[e.backing] += e.length;
	for (const auto &[backing, n] : bytes)
		fn(backing, n);
}

void Translation::replace(std::uint64_t offset, std::uint64_t len, std::span<const Extent> with,
			  const std::function<void(BackingId, std::uint64_t)> &displaced)
{
	const std::uint64_t end = offset + len;
	std::vector<Extent> out;
	out.reserve(extents_.size() + with.size() + 2);
	auto push = [&out](Extent e) {
		if (e.length == 0)
			return;
		if (!out.empty() && out.back().backing == e.backing &&
		    out.back().offset + out.back().length == e.offset)
			out.back().length += e.length;
		else
			out.push_back(e);
	};
	bool inserted = false;
	for (const auto &e : extents_) {
		const std::uint64_t e_end = e.offset + e.length;
		if (e_end <= offset || e.offset >= end) {
			if (e.offset >= end && !inserted) {
				for (const auto &w : with)
					push(w);
				inserted = true;
			}
			push(e);
			continue;
		}
		/* e overlaps the replaced range: keep its outside parts */
		if (e.offset < offset)
			push({e.offset, offset - e.offset, e.backing});
		const std::uint64_t lost = std::min(end, e_end) - std::max(offset, e.offset);
		if (e.backing != kNoBacking && lost)
			displaced(e.backing, lost);
		if (e_end > end) {
			if (!inserted) {
				for (const auto &w : with)
					push(w);
				inserted = true;
			}
			push({end, e_end - end, e.backing});
		}
	}
	if (!inserted)
		for (const auto &w : with)
			push(w);
	extents_ = std::move(out);
}

} // namespace mrsync::detail
