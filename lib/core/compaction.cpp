/* SPDX-License-Identifier: MIT */
/* Compaction: stale bytes are pages a backing still pins that no entry uses
 * (a resync replaced part of a backing); many backings are device slots
 * running out. Both are cured the same way: re-pin each maximal run of valid
 * entries, whatever backs it now, as few new backings as the driver allows,
 * in one Update, whose fence then lets the old backings go. A run is worth
 * it if a backing in it holds stale bytes, or, when slots are tight, if it
 * spans several. Eager pinning is safe here: the pages are the current ones
 * (every change reported so far was applied by the resync before), and a
 * change racing the pin moves the generation like any other. Context lock
 * held throughout. */
#include <algorithm>
#include <cinttypes>

#include <mrsync/log.hpp>

#include "context.hpp"
#include "updater.hpp"

namespace mrsync::detail {

namespace {

/* A maximal run of valid entries, cut to the range looked at. */
struct Run {
	Range range;
	std::size_t backings;
	bool stale;
	/* Where its first extent ends and its last one starts: the run
	 * without them is the fragmented middle. */
	std::uint64_t first_end, last_start;
};

/* The runs of valid entries of `extents` inside `clip`, as offsets. */
std::vector<Run> valid_runs(std::span<const Extent> extents, Range clip, const Backings &backings)
{
	std::vector<Run> runs;
	for (const auto &e : extents) {
		const std::uint64_t from = std::max(clip.start, e.offset);
		const std::uint64_t to = std::min(clip.end, e.offset + e.length);
		if (e.backing == kNoBacking || from >= to)
			continue;
		const bool stale = backings.has_stale_bytes(e.backing);
		if (!runs.empty() && runs.back().range.end == from) {
			runs.back().range.end = to;
			++runs.back().backings;
			runs.back().stale |= stale;
			runs.back().last_start = from;
		} else {
			runs.push_back({{from, to}, 1, stale, to, from});
		}
	}
	return runs;
}

/* The runs of valid entries of `t` worth re-pinning, as offsets. */
std::vector<Range> runs_worth_repinning(const Translation &t, const Backings &backings,
					bool slots_tight)
{
	std::vector<Range> worth;
	for (const Run &run : valid_runs(t.extents(), {0, t.length()}, backings))
		if (run.stale || (slots_tight && run.backings > 1))
			worth.push_back(run.range);
	return worth;
}

} // namespace

std::size_t Context::compact_locked()
{
	const bool slots_tight = backings_->count() > driver_->caps().max_backings / 2;
	if (!slots_tight && backings_->with_stale_bytes().empty())
		return 0;
	std::size_t compacted = 0;
	const std::size_t before = backings_->count();
	{
		Update u(*this);
		for (auto &[key, r] : index_) {
			const auto worth = runs_worth_repinning(*r->translation, *backings_,
								slots_tight);
			if (worth.empty())
				continue;
			/* A run that cannot be pinned (no free slot) keeps its
			 * old backings (repin_locked). */
			(void)repin_locked(u, *r, worth);
			compacted += worth.size();
		}
		(void)u.finish();
	}
	const std::size_t released = before > backings_->count() ? before - backings_->count() : 0;
	stats_.compactions += compacted;
	MRSYNC_LOG(debug, "core", "compacted %zu runs (%zu backings released)", compacted,
		   released);
	return compacted;
}

/* Entry pressure (driver.hpp, crowded): the driver's keys are about to run
 * out of entries in some ranges of r. Each run of valid entries there that
 * spans several backings becomes one backing (or as few as the driver
 * allows), re-pinned as compaction does: the pages are the current ones
 * (a source vouches for them, and every change reported so far was applied),
 * and the old backings go after this update's fence. Done inside the update
 * that is about to map, so its one map carries both and fits. A run that
 * cannot be pinned keeps its old backings: the driver reported early enough
 * for the map to fit anyway. Holes stay holes (the device must refuse). */
void Update::relieve_crowding(Region &r)
{
	const auto crowded = ctx_.driver_->crowded(r.current_keys(), r.translation->extents());
	if (crowded.empty())
		return;
	const std::uint64_t base = r.begin_va();
	/* Four or more backings: only the middle, leaving its two ends as they
	 * are (three entries where there were many), so a long run is not
	 * pinned twice over until the fence; fewer: the whole run, one entry. */
	std::vector<Range> worth;
	for (const Range &c : crowded)
		for (const Run &run : valid_runs(r.translation->extents_in(c.start, c.end - c.start),
						 c, *ctx_.backings_))
			if (run.backings > 3)
				worth.push_back({run.first_end, run.last_start});
			else if (run.backings > 1)
				worth.push_back(run.range);
	std::size_t relieved = 0;
	for (const Range &run : worth) {
		const Range va{base + run.start, base + run.end};
		/* Pages whose change may still be in progress are a lookup's to
		 * pin (lookup.cpp), and a source must vouch for the rest. */
		if (!ctx_.unsettled_locked(va.start, va.end).empty() ||
		    !ctx_.prepare_pin_locked(r.watches, va))
			continue;
		auto extents = pin(base, va.start, va.end - va.start, {}, Backings::Holes::invalidate);
		if (!extents)
			continue;
		change(r, run.start, run.end - run.start, *extents);
		++relieved;
	}
	ctx_.stats_.compactions += relieved;
	MRSYNC_LOG(debug, "core", "entry pressure in %zu ranges of [0x%" PRIx64 ", +0x%" PRIx64
		   "): %zu runs re-pinned of %zu", crowded.size(), base, r.translation->length(),
		   relieved, worth.size());
}

} // namespace mrsync::detail
