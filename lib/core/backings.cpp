/* SPDX-License-Identifier: MIT */
#include "backings.hpp"

#include <algorithm>

namespace mrsync::detail {

Backings::~Backings()
{
	for (const auto &[id, entry] : entries_)
		driver_->unpin(id);
}

Result<BackingId> Backings::pin_one(std::uint64_t va, std::uint64_t len)
{
	auto id = driver_->pin(va, len);
	if (id.ok()) {
		entries_[*id] = Entry{va, len, 0};
		pinned_bytes_ += len;
	}
	return id;
}

Result<std::vector<Extent>> Backings::pin(std::uint64_t base, std::uint64_t va, std::uint64_t len,
					  std::uint64_t granularity)
{
	const std::uint64_t max_unit = driver_->caps().max_backing_bytes;
	std::vector<Extent> extents;
	/* Work list of ranges still to pin; a range that faults is split in
	 * halves (on entry boundaries) until the unmapped entries are isolated:
	 * O(log n) pins per hole instead of one pin per page. */
	std::vector<Range> todo;
	for (std::uint64_t off = 0; off < len; off += max_unit)
		todo.push_back({va + off, va + std::min(len, off + max_unit)});
	std::reverse(todo.begin(), todo.end());
	while (!todo.empty()) {
		const Range r = todo.back();
		todo.pop_back();
		auto id = pin_one(r.start, r.end - r.start);
		if (id.ok()) {
			extents.push_back({r.start - base, r.end - r.start, *id});
			continue;
		}
		if (id.error().code != EFAULT)
			return std::move(id).error();
		const std::uint64_t entries = (r.end - r.start) / granularity;
		if (entries <= 1) {
			extents.push_back({r.start - base, r.end - r.start, kNoBacking});
			continue;
		}
		const std::uint64_t mid = r.start + (entries / 2) * granularity;
		todo.push_back({mid, r.end});
		todo.push_back({r.start, mid});
	}
	/* merge neighbouring invalid extents */
	std::vector<Extent> merged;
	for (const auto &e : extents) {
		if (!merged.empty() && e.backing == kNoBacking && merged.back().backing == kNoBacking)
			merged.back().length += e.length;
		else
			merged.push_back(e);
	}
	return merged;
}

void Backings::use(BackingId id, std::uint64_t bytes)
{
	entries_.at(id).used += bytes;
}

void Backings::unuse(BackingId id, std::uint64_t bytes)
{
	entries_.at(id).used -= bytes;
}

std::size_t Backings::release_unused() noexcept
{
	std::size_t released = 0;
	for (auto it = entries_.begin(); it != entries_.end();) {
		if (it->second.used) {
			++it;
			continue;
		}
		driver_->unpin(it->first);
		pinned_bytes_ -= it->second.len;
		it = entries_.erase(it);
		++released;
	}
	return released;
}

std::vector<BackingId> Backings::with_stale_bytes() const
{
	std::vector<BackingId> ids;
	for (const auto &[id, e] : entries_)
		if (e.used && e.used < e.len)
			ids.push_back(id);
	return ids;
}

bool Backings::has_stale_bytes(BackingId id) const
{
	auto it = entries_.find(id);
	return it != entries_.end() && it->second.used < it->second.len;
}

std::uint64_t Backings::stale_bytes() const noexcept
{
	std::uint64_t bytes = 0;
	for (const auto &[id, e] : entries_)
		bytes += e.len - std::min(e.len, e.used);
	return bytes;
}

} // namespace mrsync::detail
