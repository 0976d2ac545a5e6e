/* SPDX-License-Identifier: MIT */
/* Private. VaTable: page -> region map read without a lock by the hit path.
 *
 * Two levels, like SPDK's mem map: a top array indexed by VA bits 47..30
 * (reserved with MAP_NORESERVE, so untouched parts cost no memory) points to
 * leaves of 2^18 page slots, one leaf per GiB of address space in use. Leaves
 * are allocated under the context lock and never freed while the context
 * lives, so a reader can never follow a pointer into freed memory. Slots are
 * written with release stores and read with acquire loads. */
#ifndef MRSYNC_VA_TABLE_HPP
#define MRSYNC_VA_TABLE_HPP

#include <atomic>
#include <cstdint>

#include <mrsync/result.hpp>

namespace mrsync::detail {

struct Region;

class VaTable {
public:
	static constexpr unsigned kPageShift = 12;
	static constexpr unsigned kLeafShift = 30; /* one leaf per GiB */
	static constexpr unsigned kVaBits = 47;    /* user space without 5-level paging */
	static constexpr std::uint64_t kLeafSlots = 1ull << (kLeafShift - kPageShift);
	static constexpr std::uint64_t kTopSlots = 1ull << (kVaBits - kLeafShift);

	using Slot = std::atomic<Region *>;

	static Result<VaTable> create();
	VaTable(VaTable &&other) noexcept;
	VaTable &operator=(VaTable &&) = delete;
	VaTable(const VaTable &) = delete;
	~VaTable();

	/** Hit path: the slot of the page holding `va`, or nullptr when no
	 *  leaf covers it. A slot, once it exists, stays where it is, so a
	 *  reader may load it twice (take, then validate). Lock-free. */
	const Slot *slot(std::uint64_t va) const noexcept
	{
		if (va >> kVaBits) [[unlikely]]
			return nullptr;
		Slot *leaf = top_[va >> kLeafShift].load(std::memory_order_acquire);
		if (!leaf) [[unlikely]]
			return nullptr;
		return &leaf[(va >> kPageShift) & (kLeafSlots - 1)];
	}

	/** The region recorded for the page holding `va`, or nullptr.
	 *  Addresses beyond 47 bits are never cached. Lock-free. */
	Region *lookup(std::uint64_t va) const noexcept
	{
		const Slot *s = slot(va);
		return s ? s->load(std::memory_order_acquire) : nullptr;
	}

	/** Points every page of [start, end) at `region`. Caller holds the
	 *  context lock. Fails only when a leaf cannot be allocated. */
	Status assign(std::uint64_t start, std::uint64_t end, Region *region);

	/** For every page of [start, end) that points at `from`, points it at
	 *  `to` instead (nullptr clears). Caller holds the context lock. */
	void replace(std::uint64_t start, std::uint64_t end, Region *from, Region *to) noexcept;

	/** Whether [start, end) can be cached at all (below 2^47). */
	static bool cacheable(std::uint64_t start, std::uint64_t end) noexcept
	{
		return end <= (1ull << kVaBits) && start < end;
	}

private:
	explicit VaTable(std::atomic<Slot *> *top) : top_(top) {}
	Slot *leaf_for(std::uint64_t va, bool allocate) noexcept;

	std::atomic<Slot *> *top_ = nullptr;
};

} // namespace mrsync::detail

#endif
