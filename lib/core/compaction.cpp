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
#include <mrsync/log.hpp>

#include "context.hpp"

namespace mrsync::detail {

namespace {

/* The runs of valid entries of `t` worth re-pinning, as offsets. */
std::vector<Range> runs_worth_repinning(const Translation &t, const Backings &backings,
					bool slots_tight)
{
	struct Run {
		Range range;
		std::size_t backings;
		bool stale;
	};
	std::vector<Run> runs;
	for (const auto &e : t.extents()) {
		if (e.backing == kNoBacking)
			continue;
		const bool stale = backings.has_stale_bytes(e.backing);
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

} // namespace mrsync::detail
