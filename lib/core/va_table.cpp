/* SPDX-License-Identifier: MIT */
#include "va_table.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "format.hpp"

namespace mrsync::detail {

namespace {
constexpr std::size_t kTopBytes = VaTable::kTopSlots * sizeof(std::atomic<VaTable::Slot *>);
constexpr std::size_t kLeafBytes = VaTable::kLeafSlots * sizeof(VaTable::Slot);

void *reserve(std::size_t bytes)
{
	/* Anonymous memory reads as zero (nullptr) until written; NORESERVE
	 * keeps the untouched bulk of the table free. */
	void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? nullptr : p;
}
} // namespace

Result<VaTable> VaTable::create()
{
	void *top = reserve(kTopBytes);
	if (!top)
		return make_error(ENOMEM, std::string("cannot reserve the page table: ") +
						  errno_text(errno));
	return VaTable(static_cast<std::atomic<Slot *> *>(top));
}

VaTable::VaTable(VaTable &&other) noexcept : top_(other.top_)
{
	other.top_ = nullptr;
}

VaTable::~VaTable()
{
	if (!top_)
		return;
	for (std::uint64_t i = 0; i < kTopSlots; ++i) {
		Slot *leaf = top_[i].load(std::memory_order_relaxed);
		if (leaf)
			munmap(leaf, kLeafBytes);
	}
	munmap(top_, kTopBytes);
}

VaTable::Slot *VaTable::leaf_for(std::uint64_t va, bool allocate) noexcept
{
	auto &top = top_[va >> kLeafShift];
	Slot *leaf = top.load(std::memory_order_relaxed);
	if (leaf || !allocate)
		return leaf;
	leaf = static_cast<Slot *>(reserve(kLeafBytes));
	if (leaf) /* publish after the zeroed leaf exists (release) */
		top.store(leaf, std::memory_order_release);
	return leaf;
}

Status VaTable::assign(std::uint64_t start, std::uint64_t end, Region *region)
{
	if (!cacheable(start, end))
		return make_error(EINVAL, "range is beyond the cacheable address space");
	for (std::uint64_t va = start & ~((1ull << kPageShift) - 1); va < end;
	     va += 1ull << kPageShift) {
		Slot *leaf = leaf_for(va, true);
		if (!leaf)
			return make_error(ENOMEM, "cannot allocate a page-table leaf");
		leaf[(va >> kPageShift) & (kLeafSlots - 1)].store(region,
								  std::memory_order_release);
	}
	return {};
}

void VaTable::replace(std::uint64_t start, std::uint64_t end, Region *from, Region *to) noexcept
{
	for (std::uint64_t va = start & ~((1ull << kPageShift) - 1); va < end;
	     va += 1ull << kPageShift) {
		Slot *leaf = leaf_for(va, false);
		if (!leaf) { /* skip the rest of this GiB: nothing was recorded there */
			va = ((va >> kLeafShift) + 1) << kLeafShift;
			va -= 1ull << kPageShift;
			continue;
		}
		auto &slot = leaf[(va >> kPageShift) & (kLeafSlots - 1)];
		if (slot.load(std::memory_order_relaxed) == from)
			slot.store(to, std::memory_order_release);
	}
}

} // namespace mrsync::detail
