/* SPDX-License-Identifier: MIT */
#include "backings.hpp"

#include "address_space.hpp"

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
		stale_bytes_ += len;
		unused_.push_back(*id); /* until a translation uses it */
	}
	return id;
}

Result<std::vector<Extent>> Backings::pin(std::uint64_t base, std::uint64_t va, std::uint64_t len,
					  Holes holes)
{
	const std::uint64_t max_unit = driver_->caps().max_backing_bytes;
	std::vector<Extent> extents;
	auto add = [&extents, base](std::uint64_t from, std::uint64_t to, BackingId backing) {
		if (from >= to)
			return;
		if (backing == kNoBacking && !extents.empty() && extents.back().backing == kNoBacking)
			extents.back().length += to - from;
		else
			extents.push_back({from - base, to - from, backing});
	};
	/* Pins [s, e) as one unit; EFAULT means a hole or an unpinnable page. */
	auto pin_unit = [&](std::uint64_t s, std::uint64_t e) -> Status {
		auto id = pin_one(s, e - s);
		if (id.ok())
			add(s, e, *id);
		else if (id.error().code == EFAULT && holes == Holes::invalidate)
			add(s, e, kNoBacking);
		else
			return std::move(id).error();
		return {};
	};
	for (std::uint64_t s = va; s < va + len; s += max_unit) {
		const std::uint64_t e = std::min(va + len, s + max_unit);
		auto id = pin_one(s, e - s);
		if (id.ok()) { /* the common case: all there */
			add(s, e, *id);
			continue;
		}
		if (id.error().code != EFAULT || holes == Holes::fail)
			return std::move(id).error();
		/* Holes: one read of the maps finds the parts worth pinning. */
		std::uint64_t at = s;
		for (const auto &part : mapped_writable(s, e)) {
			add(at, part.start, kNoBacking);
			if (auto ok = pin_unit(part.start, part.end); !ok)
				return std::move(ok).error();
			at = part.end;
		}
		add(at, e, kNoBacking);
	}
	return extents;
}

void Backings::use(BackingId id, std::uint64_t bytes)
{
	update(entries_.at(id), [bytes](Entry &e) { e.used += bytes; });
}

void Backings::unuse(BackingId id, std::uint64_t bytes)
{
	auto &entry = entries_.at(id);
	update(entry, [bytes](Entry &e) { e.used -= bytes; });
	if (!entry.used)
		unused_.push_back(id);
}

std::size_t Backings::release_unused() noexcept
{
	/* Only the candidates: a fence is frequent, the backings many. A pin
	 * that was never used (a failed creation) is a candidate too. */
	std::size_t released = 0;
	for (BackingId id : unused_) {
		auto it = entries_.find(id);
		if (it == entries_.end() || it->second.used)
			continue; /* gone already, or used again */
		driver_->unpin(id);
		pinned_bytes_ -= it->second.len;
		stale_bytes_ -= stale(it->second);
		entries_.erase(it);
		++released;
	}
	unused_.clear();
	return released;
}

bool Backings::release_pending() noexcept
{
	std::erase_if(unused_, [this](BackingId id) {
		auto it = entries_.find(id);
		return it == entries_.end() || it->second.used;
	});
	return !unused_.empty();
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

} // namespace mrsync::detail
