/* SPDX-License-Identifier: MIT */
/* Eviction and reclaim. A clock (second-chance LRU) sweeps the live regions
 * when a new one would pass the limits: a region whose reference bit is set
 * gets it cleared and survives the round; one found clear and unheld is
 * retired (unlinked from the page table). Retired regions are freed once a
 * reader barrier has passed and no thread holds them; until then they stay in
 * the index, so resyncs keep their translations current for their holders.
 * Freeing destroys the device registration in an Update, whose fence comes
 * before its backings are unpinned. Context lock held throughout. */
#include <cinttypes>

#include <mrsync/log.hpp>

#include <algorithm>

#include "context.hpp"
#include "format.hpp"

namespace mrsync::detail {

std::int64_t Context::holds_locked(const Region &r) const
{
	std::int64_t sum = 0;
	for (const auto &t : threads_)
		sum += t->holds[r.slot].load(std::memory_order_relaxed);
	return sum;
}

void Context::retire_locked(Region &r)
{
	if (r.state != Region::State::live)
		return;
	r.state = Region::State::retired;
	bump_epoch();
	table_.replace(r.begin_va(), r.end_va(), &r, nullptr);
	--live_regions_;
	registered_bytes_ -= r.size.load();
	retired_.push_back(&r);
}

void Context::reclaim_locked()
{
	if (retired_.empty())
		return;
	/* After this, a reader that took a hold on a retired region is either
	 * visible in the hold sums or has seen the unlink and backs off. */
	synchronize_readers();
	Update u(*this);
	const std::size_t before = retired_.size();
	std::erase_if(retired_, [&](Region *r) {
		if (holds_locked(*r) != 0)
			return false;
		free_region_locked(u, *r);
		return true;
	});
	(void)u.finish();
	MRSYNC_LOG(debug, "core", "reclaimed %zu retired registrations, %zu still held",
		   before - retired_.size(), retired_.size());
}

void Context::free_region_locked(Update &u, Region &r)
{
	if (r.state == Region::State::live) {
		bump_epoch();
		table_.replace(r.begin_va(), r.end_va(), &r, nullptr);
		--live_regions_;
		registered_bytes_ -= r.size.load();
	}
	u.destroy(r, forked_);
	if (!forked_)
		unwatch_locked(r.watches);
	r.watches.clear();
	index_.erase({r.begin_va(), r.slot});
	r.state = Region::State::free;
	free_slots_.push_back(r.slot);
}

Status Context::make_room_locked(std::uint64_t bytes)
{
	const std::uint64_t max_bytes = params_.max_registered_bytes;
	auto over = [&] {
		return live_regions_ + 1 > params_.max_regions ||
		       (max_bytes && registered_bytes_ + bytes > max_bytes) || free_slots_.empty();
	};
	if (!over())
		return {};
	reclaim_locked(); /* retired regions whose holders are gone */
	std::uint32_t evicted = 0;
	/* Evictions in batches: freeing a retired region waits for a reader
	 * barrier (membarrier, an IPI to every CPU running a thread of ours),
	 * which cost a miss past max_regions more than the rest of it; one
	 * barrier now serves the next misses too. Small caches (tests) evict
	 * one at a time, as before. */
	const std::uint32_t batch = std::clamp<std::uint32_t>(params_.max_regions / 256, 1, 16);
	const auto want_more = [&] {
		return over() || (evicted > 0 && evicted < batch &&
				  live_regions_ + batch > params_.max_regions);
	};
	/* Two sweeps: the first may only clear reference bits. */
	for (std::uint32_t step = 0; step < 2 * slab_size_ && want_more(); ++step) {
		Region &r = slab_[clock_hand_];
		clock_hand_ = (clock_hand_ + 1) % slab_size_;
		if (r.state != Region::State::live)
			continue;
		if (r.referenced.exchange(0, std::memory_order_relaxed))
			continue;
		if (holds_locked(r) != 0)
			continue;
		retire_locked(r);
		++stats_.evictions;
		++evicted;
	}
	reclaim_locked();
	if (evicted)
		MRSYNC_LOG(debug, "core", "evicted %u registrations to make room for %" PRIu64
			   " bytes (%u live, %" PRIu64 " bytes registered)", evicted, bytes,
			   live_regions_, registered_bytes_);
	if (!over())
		return {};
	if (free_slots_.empty() || live_regions_ + 1 > params_.max_regions)
		return make_error(ENOSPC, fmt("max_regions (%u) reached and every registration is in "
					      "use: release some with mrsync_put() or raise "
					      "params.max_regions",
					      params_.max_regions));
	return make_error(ENOSPC, fmt("max_registered_bytes (%" PRIu64 ") reached: %" PRIu64
				      " bytes are registered and in use, %" PRIu64 " more asked",
				      max_bytes, registered_bytes_, bytes));
}

} // namespace mrsync::detail
