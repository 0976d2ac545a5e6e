/* SPDX-License-Identifier: MIT */
/* The resync engine: drain the sources (the context's share of its hub,
 * source_hub.hpp); for each region the changed ranges
 * touch, point those entries away from the replaced pages (an Update's
 * apply: the device map), and end in the Update's fence-then-unpin of the
 * backings nobody uses any more. The new pages are NOT pinned here: the next
 * lookup that covers them pins and maps them (repin_locked). Keys stay; DMA
 * to untouched pages is never disturbed because their extents and backings
 * are left as they are.
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

Status Context::prepare_pin_locked(std::span<const std::uint64_t> watches, Range range)
{
	if (!guarded_) /* negative controls: pin on nobody's word */
		return {};
	/* The pin is good if one source that watches the range vouches for it:
	 * it sees every later change there, and none is in progress. */
	std::optional<Error> other;
	std::string reasons;
	for (std::size_t i = 0; i < hub_->size() && i < watches.size(); ++i) {
		if (!watches[i])
			continue;
		auto ok = hub_->prepare_pin(i, watches[i], range);
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

Status Context::repin_locked(Update &u, Region &r, std::span<const Range> offsets)
{
	const std::uint64_t base = r.begin_va();
	Status first; /* the first reason a run stays invalid */
	for (const auto &run : offsets) {
		const std::uint64_t va = base + run.start, len = run.end - run.start;
		/* Entries stay invalid unless a source vouches for the pin: the
		 * device then refuses DMA there, and the lookup says why. */
		if (auto ok = prepare_pin_locked(r.watches, {va, va + len}); !ok) {
			MRSYNC_LOG(debug, "core", "[0x%" PRIx64 ", +0x%" PRIx64 ") stays invalid: %s",
				   va, len, ok.error().message.c_str());
			if (first)
				first = std::move(ok);
			continue;
		}
		auto extents = u.pin(base, va, len, {}, Backings::Holes::invalidate);
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
		if (auto ok = u.apply(r, run.start, len, with); !ok)
			return ok; /* r is retired: the device kept the old translation */
	}
	return first;
}

void Context::invalidate_locked(Update &u, Region &r, std::span<const Range> offsets)
{
	const std::uint64_t before = r.translation->invalid_bytes();
	if (!u.invalidate(r, offsets))
		return; /* retired */
	stats_.entries_invalidated += (r.translation->invalid_bytes() - before) / entry_size_;
}

Status Context::resync_locked()
{
	/* read_begin before draining: a change after it moves the words past
	 * `seq`, so the hit path keeps missing until a later resync has it. */
	const std::uint64_t seq = mrsync_gen_begin(words_, checked_words_);
	bump_epoch();
	std::vector<Range> drained, unsettled;
	/* Ours: what the sources hold, and what the context's watcher drained
	 * from them since (source_hub.hpp: it leaves us a copy). */
	const auto [overflow, unsettled_lost] = hub_->drain(client_, drained, unsettled);
	const std::size_t drained_count = drained.size();
	stats_.events += drained_count;
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
	Update u(*this);
	std::uint64_t pages = 0;
	for (auto &[r, offsets] : work)
		if (r->state != Region::State::free) {
			invalidate_locked(u, *r, offsets);
			for (const Range &o : offsets)
				pages += (o.end - o.start) / entry_size_;
		}
	Status fenced = u.finish();
	MRSYNC_LOG(debug, "core", "resync: %zu ranges reported%s; %" PRIu64 " entries of %zu "
		   "registrations invalidated (re-pinned by the next lookup)", drained_count,
		   overflow ? " and lost (ring overflow): everything" : "", pages, work.size());
	if (backings_->stale_bytes() > params_.compact_threshold ||
	    backings_->count() > driver_->caps().max_backings / 2)
		compact_locked();
	/* Publish last: a reader that sees these values finds the new
	 * translations (they were written before, under the same lock). */
	seen_.store(seq, std::memory_order_release);
	return fenced;
}

} // namespace mrsync::detail
