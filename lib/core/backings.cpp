/* SPDX-License-Identifier: MIT */
#include "backings.hpp"

#include "mapped_ranges.hpp"

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
					  Holes holes)
{
	const std::uint64_t max_unit = driver_->caps().max_backing_bytes;
	const std::vector<Range> parts = holes == Holes::fail
						 ? std::vector<Range>{{va, va + len}}
						 : mapped_writable(va, va + len);
	std::vector<Extent> extents;
	auto add = [&extents, base](std::uint64_t from, std::uint64_t to, BackingId backing) {
		if (from >= to)
			return;
		if (backing == kNoBacking && !extents.empty() && extents.back().backing == kNoBacking)
			extents.back().length += to - from;
		else
			extents.push_back({from - base, to - from, backing});
	};
	std::uint64_t at = va;
	for (const auto &part : parts) {
		add(at, part.start, kNoBacking);
		for (std::uint64_t s = part.start; s < part.end; s += max_unit) {
			const std::uint64_t e = std::min(part.end, s + max_unit);
			auto id = pin_one(s, e - s);
			if (id.ok())
				add(s, e, *id);
			else if (id.error().code == EFAULT && holes == Holes::invalidate)
				add(s, e, kNoBacking); /* mapped, but not pinnable */
			else
				return std::move(id).error();
		}
		at = part.end;
	}
	add(at, va + len, kNoBacking);
	return extents;
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
