/* SPDX-License-Identifier: MIT */
/* The slow path of a lookup or hint: find the registration that covers the
 * request, or create one (watch, vouch, then pin: build_region_locked, which
 * the fork rebuild uses too); re-pin what the request needs; and the pin
 * guards that keep every pin current (docs/design.md, "Pin guards"). The
 * device steps go through an Update (updater.hpp). Context lock held
 * throughout, but for get_slow/hint/put. */
#include "context.hpp"

#include <algorithm>
#include <cinttypes>
#include <string>

#include <mrsync/log.hpp>

#include "format.hpp"
#include "address_space.hpp"

namespace mrsync::detail {

namespace {

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v & ~(a - 1); }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

} // namespace

template <typename F>
void Context::for_each_overlapping_locked(std::uint64_t start, std::uint64_t end, F &&fn)
{
	const std::uint64_t from = start > max_region_size_ ? start - max_region_size_ : 0;
	for (auto it = index_.lower_bound({from, 0}); it != index_.end() && it->first.first < end;
	     ++it)
		if (it->second->end_va() > start && fn(it->second))
			return;
}

std::vector<Region *> Context::overlapping_locked(std::uint64_t start, std::uint64_t end)
{
	std::vector<Region *> found;
	for_each_overlapping_locked(start, end, [&found](Region *r) {
		found.push_back(r);
		return false;
	});
	return found;
}

Region *Context::find_locked(std::uint64_t addr, std::uint64_t len, std::uint32_t access)
{
	/* Every miss asks: no allocation here (callgrind, --only miss). */
	Region *found = nullptr;
	for_each_overlapping_locked(addr, addr + len, [&](Region *r) {
		if (r->state == Region::State::live && r->begin_va() <= addr &&
		    addr + len <= r->end_va() && !(access & ~r->access.load()))
			found = r;
		return found != nullptr;
	});
	return found;
}

Status Context::watch_locked(std::uint64_t start, std::uint64_t size,
			     std::vector<std::uint64_t> &handles)
{
	/* Every source that can watch the range does (a source that cannot
	 * says why); whether one can vouch for pinning it is prepare_pin's
	 * question, asked next. `handles` is a slab slot's: assigned, so its
	 * capacity is reused (one allocation less per miss). */
	handles.assign(hub_->size(), 0);
	std::string reasons;
	std::optional<Error> first;
	bool seen = false;
	for (std::size_t i = 0; i < hub_->size(); ++i) {
		auto handle = hub_->watch(i, start, size);
		if (handle) {
			handles[i] = *handle;
			seen = true;
			continue;
		}
		if (handle.error().code != ENOTSUP && !first)
			first = handle.error();
		reasons += (reasons.empty() ? "" : "; ") + handle.error().message;
	}
	if (seen)
		return {};
	if (first) /* not mapped, memlock...: more telling than "unwatchable" */
		return std::move(*first);
	return make_error(ENOTSUP, fmt("no event source of this context can watch "
				       "[0x%" PRIx64 ", +0x%" PRIx64 "), so it is not registered: %s",
				       start, size, reasons.c_str()));
}

void Context::unwatch_locked(std::span<const std::uint64_t> handles) noexcept
{
	for (std::size_t i = 0; i < handles.size() && i < hub_->size(); ++i)
		if (handles[i])
			hub_->unwatch(i, handles[i]);
}

namespace {

/* Whether all of `range` is mapped read-write now (/proc/self/maps: slow,
 * only for the pages a hint skips). */
bool mapped_read_write(Range range)
{
	std::uint64_t at = range.start;
	for (const Range &part : mapped_writable(range.start, range.end)) {
		if (part.start > at)
			break;
		at = part.end;
	}
	return at >= range.end;
}

Error not_mapped(std::uint64_t addr, std::uint64_t len)
{
	return Error{EFAULT, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
				 ") is not mapped, or not entirely",
				 addr, len)};
}

} // namespace

std::vector<Range> Context::unsettled_locked(std::uint64_t start, std::uint64_t end) const
{
	if (!guarded_)
		return {};
	return unsettled_.intersect({start, end});
}

void Context::claim_table_locked(Region &r, std::uint64_t from, std::uint64_t to)
{
	/* The registration takes the slots of its valid pages in [from, to);
	 * an invalid page -- a hole inside an entry larger than a page, too --
	 * keeps no slot, so its lookups go to the slow path and fail there. */
	const std::uint64_t base = r.begin_va();
	/* Only the extents of [from, to): a fragmented registration must not
	 * cost a walk of its whole list per lookup (issue 14). */
	for (const Extent &e : r.translation->extents_in(from - base, to - from)) {
		const std::uint64_t s = std::max(from, base + e.offset);
		const std::uint64_t t = std::min(to, base + e.offset + e.length);
		if (e.backing == kNoBacking || s >= t)
			continue;
		if (auto ok = table_.assign(s, t, &r); !ok)
			MRSYNC_LOG(warning, "core", "region stays out of the page table: %s",
				   ok.error().message.c_str());
	}
}

Status Context::build_region_locked(Update &u, Region &r, std::uint32_t access, Want want,
				    Unpinnable unpinnable)
{
	/* Watch before pinning: a change between the two is then reported; a
	 * source then vouches that no change of the range is in progress and
	 * that it sees every later one (the sequence-then-retry idiom of
	 * mmu_interval_notifier; the retry is the generation check of the
	 * caller). Memory no source vouches for is not pinned: serving it would
	 * be a lost write waiting for the first change nobody reports. */
	const std::uint64_t start = r.begin_va(), size = r.size.load(std::memory_order_relaxed);
	const bool fail = unpinnable == Unpinnable::fail;
	Status watches = watch_locked(start, size, r.watches);
	if (!watches && fail) {
		r.watches.clear();
		return watches;
	}
	if (!watches)
		MRSYNC_LOG(warning, "core", "[0x%" PRIx64 ", +0x%" PRIx64 ") stays invalid: %s",
			   start, size, watches.error().message.c_str());
	const auto give_up = [&](Error why) {
		unwatch_locked(r.watches);
		r.watches.clear();
		return why;
	};
	std::vector<Range> skip;
	Status vouched = watches ? prepare_pin_locked(r.watches, {start, start + size})
				 : Status(std::move(watches).error());
	if (!vouched && fail)
		return give_up(std::move(vouched).error());
	if (!vouched)
		skip = {{start, start + size}}; /* all invalid */
	else if (want == Want::hint && guarded_)
		skip = unsettled_locked(start, start + size);
	for (const Range &s : skip)
		if (fail && !mapped_read_write(s))
			return give_up(not_mapped(s.start, s.end - s.start));
	if (auto ok = u.create(r, access, skip, fail ? Backings::Holes::fail
						     : Backings::Holes::invalidate);
	    !ok)
		return give_up(std::move(ok).error());
	return {};
}

Result<Region *> Context::create_region_locked(std::uint64_t addr, std::uint64_t len,
					       std::uint32_t access, Want want)
{
	const std::uint64_t start = align_down(addr, entry_size_);
	const std::uint64_t size = align_up(addr + len, entry_size_) - start;
	if (auto ok = make_room_locked(size); !ok)
		return std::move(ok).error();
	Region &r = slab_[free_slots_.back()];
	/* Not reachable yet: no page-table slot and no index entry. */
	r.start.store(start, std::memory_order_relaxed);
	r.size.store(size, std::memory_order_relaxed);
	Update u(*this);
	if (auto built = build_region_locked(u, r, access, want, Unpinnable::fail); !built) {
		if (built.error().code != EFAULT)
			return std::move(built).error();
		return make_error(EFAULT, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") is not mapped, or not entirely (%s)",
					      addr, len, built.error().message.c_str()));
	}

	free_slots_.pop_back();
	r.state = Region::State::live;
	r.access.store(access, std::memory_order_relaxed);
	r.referenced.store(1, std::memory_order_relaxed);
	index_.emplace(std::pair{start, r.slot}, &r);
	max_region_size_ = std::max(max_region_size_, size);
	++live_regions_;
	registered_bytes_ += size;
	++stats_.registrations;
	if (holes_ok_ || !r.translation->invalid_bytes())
		claim_table_locked(r, start, start + size);
	return &r;
}

Status Context::repin_invalid_locked(Update &u, Region &r, std::uint64_t addr,
				     std::uint64_t len)
{
	const std::uint64_t start = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_) - start;
	const std::uint64_t to = align_up(addr + len, entry_size_) - start;
	const auto runs = r.translation->invalid_runs(from, to - from);
	if (runs.empty())
		return {};
	/* A region the fork rebuild could not watch is unwatched: watch it now
	 * (before the pin, as build_region_locked does), or say why not. */
	if (std::none_of(r.watches.begin(), r.watches.end(), [](std::uint64_t h) { return h != 0; }))
		if (auto watched = watch_locked(start, r.size.load(std::memory_order_relaxed), r.watches);
		    !watched)
			return watched;
	Status repinned = repin_locked(u, r, runs);
	if (r.state != Region::State::live || !r.translation->invalid_runs(addr - start, len).empty())
		return repinned ? Status(not_mapped(addr, len)) : repinned;
	return {};
}

/* A hint re-pins the invalid pages of its range, but none whose change may
 * still be in progress (unsettled_); it still says, as a lookup would, when
 * part of its range is not mapped (read-write) now. */
Status Context::hint_locked(Update &u, Region &r, std::uint64_t addr, std::uint64_t len)
{
	const std::uint64_t base = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_), to = align_up(addr + len, entry_size_);
	if (holes_ok_ && r.translation->invalid_bytes() != 0) {
		std::vector<Range> invalid;
		for (const Range &run : r.translation->invalid_runs(from - base, to - from))
			invalid.push_back({base + run.start, base + run.end});
		std::vector<Range> settled;
		for (const Range &run : subtract(invalid, unsettled_locked(from, to)))
			settled.push_back({run.start - base, run.end - base});
		if (!settled.empty())
			(void)repin_locked(u, r, settled);
		if (r.state != Region::State::live)
			return {};
	}
	for (const Range &run : r.translation->invalid_runs(addr - base, len))
		if (!mapped_read_write({base + run.start, base + run.end}))
			return not_mapped(addr, len);
	return {};
}

/* What a lookup or hint may re-pin in a registration that covers it.
 * @return ESTALE when `r` was retired to make way for a new registration. */
Status Context::serve_locked(Region &r, std::uint64_t addr, std::uint64_t len, Want want)
{
	Update u(*this);
	Status ok = serve_or_retire_locked(u, r, addr, len, want);
	/* A device that refused the new translation (a page unmapped after we
	 * pinned it but before the driver took it, whose event we have not
	 * drained yet) got its region retired: the caller starts over and a
	 * new registration -- or the lookup's own failure -- says what is
	 * current. */
	if (!ok && r.state != Region::State::live)
		return make_error(ESTALE, "registration retired");
	return ok;
}

Status Context::serve_or_retire_locked(Update &u, Region &r, std::uint64_t addr,
				       std::uint64_t len, Want want)
{
	if (want == Want::hint && guarded_)
		return hint_locked(u, r, addr, len);
	if (holes_ok_)
		return repin_invalid_locked(u, r, addr, len);
	/* The driver serves a registration only without holes (one MR covers
	 * it): all of them are re-pinned -- unless some outside the request may
	 * still be changing (unsettled_), which only a lookup that needs them
	 * may pin -- or unless some stay unmapped: then a new registration
	 * covers just the request. */
	const std::uint64_t base = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_), to = align_up(addr + len, entry_size_);
	const auto retired = [&] {
		retire_locked(r);
		return make_error(ESTALE, "registration retired");
	};
	if (r.translation->invalid_bytes() != 0 &&
	    (!unsettled_locked(base, from).empty() || !unsettled_locked(to, r.end_va()).empty()))
		return retired();
	/* The request's own pages first: if they cannot be had, the lookup
	 * fails with their reason; if only the rest cannot, a new registration
	 * covers the request. */
	if (auto ok = repin_invalid_locked(u, r, addr, len); !ok)
		return ok;
	if (!repin_invalid_locked(u, r, base, r.size.load()))
		return retired();
	return {};
}

Status Context::slow_path(std::uint64_t addr, std::uint64_t len, std::uint32_t access, Want want,
			  mrsync_reg *out)
{
	if (auto ok = validate_request(addr, len, access); !ok)
		return ok;
	std::lock_guard guard(lock_);
	++stats_.misses;
	ThreadState &ts = thread_state_locked();
	for (;;) {
		if (forked_)
			if (auto ok = rebuild_after_fork_locked(); !ok)
				return ok;
		if (check_generations_ && generations_moved())
			if (auto ok = resync_locked(); !ok)
				return ok;
		Region *r = find_locked(addr, len, access);
		if (!r) {
			auto created = create_region_locked(addr, len, access, want);
			if (!created)
				return std::move(created).error();
			r = *created;
		} else if (auto ok = serve_locked(*r, addr, len, want); !ok) {
			if (ok.error().code == ESTALE)
				continue;
			return ok;
		}
		/* Events that arrived while we pinned: apply them first, so what
		 * we hand out is current when we return. */
		if (check_generations_ && generations_moved())
			continue;
		claim_table_locked(*r, align_down(addr, entry_size_),
				   align_up(addr + len, entry_size_));
		if (want == Want::hint)
			return {};
		/* A lookup pinned these pages after every change reported so far:
		 * whatever was in progress there is its business now. */
		unsettled_.remove({align_down(addr, entry_size_), align_up(addr + len, entry_size_)});
		ThreadState::bump(ts.holds[r->slot], 1);
		r->referenced.store(1, std::memory_order_relaxed);
		const Keys keys = r->current_keys();
		*out = {r->begin_va(), r->size.load(), keys.lkey, keys.rkey,
			reinterpret_cast<mrsync_region *>(r)};
		/* Nothing moves the epoch or seen_ but this lock's holder. */
		fill_mru(ts, *r, ts.holds[r->slot], hot_.epoch, seen_.load(std::memory_order_relaxed),
			 addr, len, *out);
		return {};
	}
}

Status Context::get_slow(std::uint64_t addr, std::uint64_t len, std::uint32_t access,
			 mrsync_reg &out)
{
	return slow_path(addr, len, access, Want::lookup, &out);
}

Status Context::put(mrsync_region *handle)
{
	const Region *r = owned_region(handle);
	if (!r)
		return make_error(EINVAL, "reg->region was not handed out by this context");
	ThreadState *ts = tls_slots[0].ctx_id == id_ ? tls_slots[0].state : nullptr;
	if (!ts) {
		std::lock_guard guard(lock_);
		ts = &thread_state_locked();
	}
	ThreadState::bump(ts->holds[r->slot], -1);
	return {};
}

Status Context::hint(std::uint64_t addr, std::uint64_t len, std::uint32_t access)
{
	return slow_path(addr, len, access, Want::hint, nullptr);
}

} // namespace mrsync::detail
