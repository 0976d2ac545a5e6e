/* SPDX-License-Identifier: MIT */
#include "iova_space.hpp"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <iterator>

#include "format.hpp"

namespace mrsync::vfio {

void IovaSpace::add(std::uint64_t start, std::uint64_t end)
{
	if (start >= end)
		return;
	/* Swallow every free range that touches [start, end). */
	auto it = free_.upper_bound(start);
	if (it != free_.begin() && std::prev(it)->second >= start)
		--it;
	while (it != free_.end() && it->first <= end) {
		start = std::min(start, it->first);
		end = std::max(end, it->second);
		it = free_.erase(it);
	}
	free_.emplace(start, end);
}

void IovaSpace::remove(std::uint64_t start, std::uint64_t end)
{
	if (start >= end)
		return;
	auto it = free_.upper_bound(start);
	if (it != free_.begin())
		--it;
	while (it != free_.end() && it->first < end) {
		const std::uint64_t s = it->first, e = it->second;
		if (e <= start) {
			++it;
			continue;
		}
		it = free_.erase(it);
		if (s < start)
			free_.emplace(s, start);
		if (e > end)
			free_.emplace(end, e);
	}
}

Result<std::uint64_t> IovaSpace::alloc(std::uint64_t size, std::uint64_t align)
{
	for (const auto &[s, e] : free_) {
		const std::uint64_t at = (s + align - 1) & ~(align - 1);
		if (at >= s && at < e && e - at >= size) {
			remove(at, at + size);
			return at;
		}
	}
	return make_error(ENOSPC, detail::fmt("vfio: no free IOVA range of 0x%" PRIx64
					      " bytes below the DMA mask (0x%" PRIx64
					      " bytes free, fragmented or too few)",
					      size, available()));
}

std::uint64_t IovaSpace::available() const noexcept
{
	std::uint64_t n = 0;
	for (const auto &[s, e] : free_)
		n += e - s;
	return n;
}

} // namespace mrsync::vfio
