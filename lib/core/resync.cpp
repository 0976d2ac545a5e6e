/* SPDX-License-Identifier: MIT */
/* The resync engine: drain the sources; for each region the changed ranges
 * touch, point those entries away from the replaced pages (map), fence, and
 * unpin the backings nobody uses any more; the next lookup that covers them
 * pins the new pages and maps them (repin_locked). Keys stay; DMA to
 * untouched pages is never disturbed because their extents and backings are
 * left as they are.
 *
 * Why the new pages are not pinned during the resync itself: an event may be
 * reported before the change is complete -- the kernel module fires at
 * invalidate_range_start, userfaultfd reports MADV_DONTNEED before it zaps --
 * and a pin taken in that window would pin the very pages being replaced,
 * with no later event to say so. A lookup that covers the range comes from a
 * thread that wants to use it, after the change (or racing with it, which is
 * the application's use-after-free), so the pin it takes is of the new pages.
 * Compaction and the fork rebuild pin eagerly: nothing is changing there.
 * Context lock held throughout. */
#include <algorithm>
#include <cinttypes>

#include <mrsync/log.hpp>

#include "context.hpp"
#include "format.hpp"

namespace mrsync::detail {

namespace {

/* Sorts, aligns to entries and merges the drained ranges. */
std::vector<Range> normalise(std::vector<Range> ranges, std::uint64_t entry)
{
	for (auto &r : ranges) {
		r.start &= ~(entry - 1);
		r.end = (r.end + entry - 1) & ~(entry - 1);
	}
	std::sort(ranges.begin(), ranges.end(),
		  [](const Range &a, const Range &b) { return a.start < b.start; });
	std::vector<Range> merged;
	for (const auto &r : ranges) {
		if (r.start >= r.end)
			continue;
		if (!merged.empty() && r.start <= merged.back().end)
			merged.back().end = std::max(merged.back().end, r.end);
		else
			merged.push_back(r);
	}
	return merged;
}

} // namespace

Status Context::fence_and_release_locked()
{
	auto fenced = driver_->fence();
	if (!fenced) {
		/* Without a fence nothing may be unpinned: keep the stale pins,
		 * they are counted and retried at the next resync. */
		MRSYNC_LOG(error, "core", "fence failed, keeping replaced pages pinned: %s",
			   fenced.error().message.c_str());
		return fenced;
	}
	backings_->release_unused();
	return {};
}

/* The device kept a registration's old translation: it must not be used
 * again. A page the application unmapped meanwhile (EFAULT) is its doing,
 * not an error of ours; anything else is worth a warning. */
void Context::retire_after_map_failure_locked(Region &r, const Error &why)
{
	if (why.code == EFAULT)
		MRSYNC_LOG(debug, "core", "retiring a registration whose pages went away: %s",
			   why.message.c_str());
	else
		MRSYNC_LOG(warning, "core", "the device could not map a registration, retiring "
			   "it: %s", why.message.c_str());
	retire_locked(r);
}

/* The page table follows the device, never leads it: entries about to go
 * invalid leave it before the device map, new valid ones join it after, so
 * a hit never returns keys for a page the device cannot serve yet. */
void Context::unpublish_locked(Region &r, std::span<const Extent> extents)
{
	const std::uint64_t base = r.begin_va();
	bool invalid = false;
	for (const auto &e : extents)
		if (e.backing == kNoBacking) {
			table_.replace(base + e.offset, base + e.offset + e.length, &r, nullptr);
			invalid = true;
		}
	if (invalid)
		r.has_invalid.store(1, std::memory_order_relaxed);
	/* A driver whose registrations serve nothing while they have a hole:
	 * no page of r may hit until a lookup re-pinned them all. */
	if (invalid && !holes_ok_)
		table_.replace(base, r.end_va(), &r, nullptr);
}

void Context::publish_locked(Region &r, std::span<const Extent> extents)
{
	/* Valid entries fill the slots nobody else holds. */
	if (!holes_ok_ && r.translation->invalid_bytes())
		return;
	const std::uint64_t base = r.begin_va();
	for (const auto &e : extents)
		if (e.backing != kNoBacking)
			table_.replace(base + e.offset, base + e.offset + e.length, nullptr, &r);
}

/* A driver that cannot keep keys (verbs without rereg) just changed them:
 * count it and tell the application, whose peers hold the old rkey. */
void Context::report_key_change_locked(const Region &r, Keys old_keys, Keys new_keys)
{
	++stats_.key_changes;
	if (!params_.on_key_change)
		return;
	const mrsync_key_change change{r.begin_va(), r.size.load(std::memory_order_relaxed),
				       old_keys.lkey, old_keys.rkey, new_keys.lkey, new_keys.rkey};
	params_.on_key_change(params_.on_key_change_arg, &change);
}

Status Context::apply_locked(Region &r, std::uint64_t offset, std::uint64_t len,
			     std::span<const Extent> extents)
{
	unpublish_locked(r, extents);
	r.translation->replace(offset, len, extents,
			       [this](BackingId b, std::uint64_t n) { backings_->unuse(b, n); });
	for (const auto &e : extents)
		if (e.backing != kNoBacking)
			backings_->use(e.backing, e.length);
	const Keys old_keys = r.current_keys();
	auto keys = driver_->map(old_keys, r.translation->extents());
	if (!keys)
		return std::move(keys).error();
	if (*keys != old_keys) {
		r.keys.store(pack_keys(*keys), std::memory_order_relaxed);
		report_key_change_locked(r, old_keys, *keys);
	}
	r.has_invalid.store(r.translation->invalid_bytes() != 0, std::memory_order_relaxed);
	publish_locked(r, extents);
	return {};
}

Status Context::prepare_pin_locked(std::span<const std::uint64_t> watches, Range range)
{
	if (!guarded_) /* negative controls: pin on nobody's word */
		return {};
	/* The pin is good if one source that watches the range vouches for it:
	 * it sees every later change there, and none is in progress. */
	std::optional<Error> other;
	std::string reasons;
	for (std::size_t i = 0; i < sources_.size() && i < watches.size(); ++i) {
		if (!watches[i])
			continue;
		auto ok = sources_[i]->prepare_pin(watches[i], range);
		if (ok)
			return {};
		if (ok.error().code != ENOTSUP && !other)
			other = ok.error();
		reasons += (reasons.empty() ? "" : "; ") + ok.error().message;
	}
	if (other) /* not mapped...: more telling than "cannot see it" */
		return std::move(*other);
	return make_error(ENOTSUP, fmt("no event source of this context can see every change of "
				       "[0x%" PRIx64 ", 0x%" PRIx64 "), so it is not pinned: %s",
				       range.start, range.end,
				       reasons.empty() ? "none watches it" : reasons.c_str()));
}

Status Context::prepare_pin_locked(const Region &r, Range range)
{
	return prepare_pin_locked(r.watches, range);
}

Status Context::repin_locked(Region &r, std::span<const Range> offsets)
{
	const std::uint64_t base = r.begin_va();
	Status first; /* the first reason a run stays invalid */
	for (const auto &run : offsets) {
		const std::uint64_t va = base + run.start, len = run.end - run.start;
		/* Entries stay invalid unless a source vouches for the pin: the
		 * device then refuses DMA there, and the lookup says why. */
		if (auto ok = prepare_pin_locked(r, {va, va + len}); !ok) {
			MRSYNC_LOG(debug, "core", "[0x%" PRIx64 ", +0x%" PRIx64 ") stays invalid: %s",
				   va, len, ok.error().message.c_str());
			if (first)
				first = std::move(ok);
			continue;
		}
		auto extents = backings_->pin(base, va, len, Backings::Holes::invalidate);
		std::vector<Extent> invalid{{run.start, len, kNoBacking}};
		if (!extents) { /* memlock or no free backing */
			if (first)
				first = extents.error();
			/* A run still served (compaction) keeps its old backings;
			 * an invalid one stays invalid: the device must refuse. */
			if (r.translation->invalid_runs(run.start, len).empty())
				continue;
			MRSYNC_LOG(warning, "core", "cannot pin [0x%" PRIx64 ", +0x%" PRIx64
				   "), entries left invalid: %s", va, len,
				   extents.error().message.c_str());
		}
		const std::span<const Extent> with = extents ? std::span<const Extent>(*extents)
							     : std::span<const Extent>(invalid);
		for (const auto &e : with) {
			const std::uint64_t entries = e.length / entry_size_;
			if (e.backing != kNoBacking) {
				stats_.entries_repinned += entries;
				stats_.bytes_repinned += e.length;
			}
		}
		if (auto ok = apply_locked(r, run.start, len, with); !ok) {
			/* The device kept the old translation: it must not be used
			 * again. Retiring unlinks the region; its holders' DMA
			 * fails at the device's next map of this key at worst. */
			retire_after_map_failure_locked(r, ok.error());
			return ok;
		}
	}
	return first;
}

void Context::invalidate_locked(Region &r, std::span<const Range> offsets)
{
	for (const auto &run : offsets) {
		const Extent invalid{run.start, run.end - run.start, kNoBacking};
		const std::uint64_t before = r.translation->invalid_bytes();
		if (auto ok = apply_locked(r, run.start, invalid.length, {&invalid, 1}); !ok) {
			retire_after_map_failure_locked(r, ok.error());
			return;
		}
		stats_.entries_invalidated +=
			(r.translation->invalid_bytes() - before) / entry_size_;
	}
}

Status Context::resync_locked()
{
	std::uint64_t gens[kMaxSources];
	for (std::uint32_t i = 0; i < nsources_; ++i)
		gens[i] = __atomic_load_n(gen_[i], __ATOMIC_ACQUIRE);
	std::vector<Range> drained, unsettled;
	bool overflow = false, unsettled_lost = false;
	for (auto &source : sources_) {
		overflow |= source->drain(drained);
		unsettled_lost |= source->drain_unsettled(unsettled);
	}
	stats_.events += drained.size();
	++stats_.resyncs;
	if (unsettled_lost)
		unsettled_.add({0, 1ull << VaTable::kVaBits});
	for (const Range &r : normalise(std::move(unsettled), entry_size_))
		unsettled_.add(r);

	/* Which entries of which region changed, as offsets in the region. */
	std::vector<std::pair<Region *, std::vector<Range>>> work;
	if (overflow) {
		++stats_.full_resyncs;
		for (auto &[key, r] : index_)
			work.push_back({r, {{0, r->size.load()}}});
	} else {
		std::unordered_map<Region *, std::size_t> slot_of;
		for (const auto &changed : normalise(std::move(drained), entry_size_))
			for (Region *r : overlapping_locked(changed.start, changed.end)) {
				const std::uint64_t s = std::max(changed.start, r->begin_va());
				const std::uint64_t e = std::min(changed.end, r->end_va());
				auto [it, fresh] = slot_of.try_emplace(r, work.size());
				if (fresh)
					work.push_back({r, {}});
				work[it->second].second.push_back({s - r->begin_va(), e - r->begin_va()});
			}
	}
	for (auto &[r, offsets] : work)
		if (r->state != Region::State::free)
			invalidate_locked(*r, offsets);
	Status fenced = fence_and_release_locked();
	if (backings_->stale_bytes() > params_.compact_threshold ||
	    backings_->count() > driver_->caps().max_backings / 2)
		compact_locked();
	/* Publish last: a reader that sees these values finds the new
	 * translations (they were written before, under the same lock). */
	for (std::uint32_t i = 0; i < nsources_; ++i)
		seen_[i].store(gens[i], std::memory_order_release);
	return fenced;
}

std::size_t Context::compact_locked()
{
	/* Stale bytes are pages a backing still pins that no entry uses; many
	 * backings are slots running out. Both are cured the same way: re-pin
	 * each maximal run of valid entries, whatever backs it now, as few new
	 * backings as the driver allows -- a run is worth it if a backing in it
	 * holds stale bytes, or, when slots are tight, if it spans several. */
	const bool slots_tight = backings_->count() > driver_->caps().max_backings / 2;
	if (!slots_tight && backings_->with_stale_bytes().empty())
		return 0;
	std::size_t compacted = 0;
	for (auto &[key, r] : index_) {
		struct Run {
			Range range;
			std::size_t backings;
			bool stale;
		};
		std::vector<Run> runs;
		for (const auto &e : r->translation->extents()) {
			if (e.backing == kNoBacking)
				continue;
			const bool stale = backings_->has_stale_bytes(e.backing);
			if (!runs.empty() && runs.back().range.end == e.offset) {
				runs.back().range.end += e.length;
				++runs.back().backings;
				runs.back().stale |= stale;
			} else {
				runs.push_back({{e.offset, e.offset + e.length}, 1, stale});
			}
		}
		std::vector<Range> worth;
		for (const Run &run : runs)
			if (run.stale || (slots_tight && run.backings > 1))
				worth.push_back(run.range);
		if (worth.empty())
			continue;
		/* The still-current pages, pinned again, replace the old backings'
		 * last uses; the fence below lets those go. A run that cannot be
		 * pinned (no free slot) keeps its old backings. */
		(void)repin_locked(*r, worth);
		compacted += worth.size();
	}
	const std::size_t before = backings_->count();
	(void)fence_and_release_locked();
	const std::size_t released = before > backings_->count() ? before - backings_->count() : 0;
	stats_.compactions += compacted;
	MRSYNC_LOG(debug, "core", "compacted %zu runs (%zu backings released)", compacted,
		   released);
	return compacted;
}

void Context::mark_forked() noexcept
{
	forked_ = true;
	/* An impossible value: every hit path check fails until the rebuild. */
	for (std::uint32_t i = 0; i < nsources_; ++i)
		seen_[i].store(~0ull, std::memory_order_relaxed);
}

Status Context::rebuild_after_fork_locked()
{
	/* The parent's device objects and sources are not ours: drop them
	 * without touching them. The old sources stay allocated because a
	 * hit path may still load their generation words. */
	driver_->abandon();
	backings_->abandon();
	for (auto &source : sources_) {
		source->abandon();
		abandoned_sources_.push_back(std::move(source));
	}
	sources_.clear();
	auto driver = [&]() -> Result<std::unique_ptr<Driver>> {
		const DriverFactory *factory = find_driver(driver_->name());
		return factory->create(DriverConfig{entry_size_, params_.driver_arg});
	}();
	if (!driver)
		return std::move(driver).error();
	std::uint32_t mask = 0;
	for (const auto &old : abandoned_sources_)
		for (std::uint32_t bit : {MRSYNC_SOURCE_KMOD, MRSYNC_SOURCE_UFFD, MRSYNC_SOURCE_MANUAL,
					  MRSYNC_SOURCE_DPDK})
			if (const SourceFactory *f = find_source(bit); f && old->name() == f->name)
				mask |= bit;
	backings_.reset();
	unsettled_.clear(); /* the parent's changes; the child pins afresh below */
	driver_ = std::move(driver.value());
	backings_.emplace(*driver_);
	for (std::uint32_t bit = 1; bit <= MRSYNC_SOURCE_DPDK; bit <<= 1) {
		if (!(mask & bit))
			continue;
		auto source = find_source(bit)->create(source_config(params_));
		if (!source)
			return std::move(source).error();
		sources_.push_back(std::move(source.value()));
	}
	nsources_ = static_cast<std::uint32_t>(sources_.size());
	/* The generations before anything is watched or pinned: a change while
	 * the regions are rebuilt moves them past these, and the next lookup
	 * resyncs (publishing later values would swallow that change). */
	std::uint64_t gens[kMaxSources];
	for (std::uint32_t i = 0; i < nsources_; ++i) {
		gen_[i] = sources_[i]->generation();
		gens[i] = __atomic_load_n(gen_[i], __ATOMIC_ACQUIRE);
	}

	/* Every region: watch again, pin the child's pages, new keys. Memory
	 * no source of the child can see stays invalid (lookups say why). */
	for (auto &[key, r] : index_) {
		const std::uint64_t start = r->begin_va(), size = r->size.load();
		auto watches = watch_locked(start, size);
		r->watches = watches ? std::move(*watches)
				     : std::vector<std::uint64_t>(sources_.size(), 0);
		r->translation.emplace(size);
		const bool vouched = watches && prepare_pin_locked(*r, {start, start + size});
		auto extents = vouched ? backings_->pin(start, start, size, Backings::Holes::invalidate)
				       : Result<std::vector<Extent>>(std::vector<Extent>{
						 {0, size, kNoBacking}});
		if (!extents)
			return std::move(extents).error();
		r->translation->replace(0, size, *extents, [](BackingId, std::uint64_t) {});
		unpublish_locked(*r, *extents);
		for (const auto &e : *extents)
			if (e.backing != kNoBacking)
				backings_->use(e.backing, e.length);
		auto keys = driver_->create(start, size, r->access.load(), r->translation->extents());
		if (!keys)
			return std::move(keys).error();
		r->keys.store(pack_keys(*keys), std::memory_order_relaxed);
		r->has_invalid.store(r->translation->invalid_bytes() != 0, std::memory_order_relaxed);
		publish_locked(*r, *extents);
	}
	++stats_.full_resyncs;
	forked_ = false;
	__atomic_store_n(&fork_base_, generation_at_fork_ + 1, __ATOMIC_RELEASE);
	for (std::uint32_t i = 0; i < nsources_; ++i)
		seen_[i].store(gens[i], std::memory_order_release);
	return {};
}

} // namespace mrsync::detail
