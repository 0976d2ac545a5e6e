/* SPDX-License-Identifier: MIT */
/* Private. One cached registration. Regions live in a slab owned by the
 * context and are never freed while it lives (type-stable memory): the hit
 * path may read a region that is being retired, so every field it reads is an
 * atomic, and it re-validates the page table after taking its hold. */
#ifndef MRSYNC_REGION_HPP
#define MRSYNC_REGION_HPP

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include <mrsync/driver.hpp>

#include "translation.hpp"

namespace mrsync::detail {

inline std::uint64_t pack_keys(Keys k) noexcept
{
	return std::uint64_t(k.lkey) | (std::uint64_t(k.rkey) << 32);
}
inline Keys unpack_keys(std::uint64_t v) noexcept
{
	return Keys{std::uint32_t(v), std::uint32_t(v >> 32)};
}

struct alignas(64) Region {
	/* Read by the hit path (relaxed: published by the release store of the
	 * page-table slot that points here). */
	std::atomic<std::uint64_t> start{0};
	std::atomic<std::uint64_t> size{0};
	std::atomic<std::uint64_t> keys{0}; /* pack_keys(); one word so never torn */
	std::atomic<std::uint32_t> access{0};
	/* Non-zero while some entry has no translation. Invalid entries also
	 * lose their page-table slots, so a hit on one page needs no more; a
	 * request spanning three or more pages of such a region is served by
	 * the slow path, which re-pins what the request covers. */
	std::atomic<std::uint32_t> has_invalid{0};
	/* Clock (second-chance LRU) bit: the hit path sets it only when clear,
	 * so a hot region's line is not written on every hit. */
	std::atomic<std::uint8_t> referenced{0};
	std::uint32_t slot = 0; /* index in the slab and in the hold arrays; immutable */

	/* Slow path only, under the context lock. */
	enum class State : std::uint8_t { free, live, retired };
	State state = State::free;
	std::optional<Translation> translation;
	std::vector<std::uint64_t> watches; /* one handle per event source */
	/* The device was told to forget the keys already (a refused map whose
	 * all-invalid map was refused too): freeing must not destroy them again. */
	bool keys_destroyed = false;

	std::uint64_t begin_va() const noexcept { return start.load(std::memory_order_relaxed); }
	std::uint64_t end_va() const noexcept
	{
		return begin_va() + size.load(std::memory_order_relaxed);
	}
	Keys current_keys() const noexcept
	{
		return unpack_keys(keys.load(std::memory_order_relaxed));
	}
};

} // namespace mrsync::detail

#endif
