/* SPDX-License-Identifier: MIT */
/* The fork child's rebuild. A child inherits the parent's cache but none of
 * its device objects or event sources (those belong to the parent's
 * address space), so the first slow path after a fork drops them without
 * touching them, opens a driver and sources the way the context was created
 * (open_driver, open_hub) and builds every region again the way a lookup
 * creates one (build_region_locked): watch, vouch, pin the child's pages,
 * new keys. Memory no source of the child can see stays invalid (lookups
 * then say why). Context lock held throughout. */
#include <cinttypes>

#include <mrsync/log.hpp>

#include "context.hpp"
#include "subscription.hpp" /* the abandoned watcher kept */

namespace mrsync::detail {

void Context::mark_forked() noexcept
{
	forked_ = true;
	/* Past every value the parent showed (note_fork took it under the
	 * lock): whoever sums the words sees them move and comes to the slow
	 * path, which rebuilds. */
	__atomic_store_n(&fork_base_, generation_at_fork_ + 1, __ATOMIC_RELEASE);
	/* An impossible value: every hit path check fails until the rebuild. */
	seen_.store(~0ull, std::memory_order_relaxed);
	bump_epoch();
}

Status Context::rebuild_after_fork_locked()
{
	/* The parent's device objects and sources are not ours: drop them
	 * without touching them. The old sources stay allocated because a
	 * caller may still sum their generation words. */
	const std::uint64_t old_generation = generation();
	driver_->abandon();
	backings_->abandon();
	hub_->abandon(); /* kept as hub_ (every call a no-op) until the new one */
	abandoned_hubs_.push_back(hub_);
	/* The application may still hold the parent's watcher (it must not use
	 * it here): kept, bound to the abandoned hub, until the context goes. */
	if (watcher_)
		abandoned_watchers_.push_back(std::move(watcher_));
	auto driver = open_driver(std::string(driver_->name()).c_str(), entry_size_,
				  params_.driver_arg);
	if (!driver)
		return std::move(driver).error();
	backings_.reset();
	unsettled_.clear(); /* the parent's changes; the child pins afresh below */
	driver_ = std::move(driver.value());
	backings_.emplace(*driver_);
	std::uint32_t mask = source_mask_;
	auto hub = open_hub(mask, source_config(params_), fanout_of(params_));
	if (!hub)
		return std::move(hub).error();
	/* The child's words replace the parent's. The context's own word first
	 * jumps past every sum of the old ones: a caller still summing the old
	 * words sees them move (and fetches the new ones), and the sums of the
	 * new words, which start near 0, never repeat a value seen before
	 * (sequentially: a reader racing this rebuild from another thread of
	 * the child may see the old words with the new base in between). */
	__atomic_store_n(&fork_base_, old_generation + 1, __ATOMIC_RELEASE);
	adopt_sources(std::move(hub.value()));
	/* The generation before anything is watched or pinned: a change while
	 * the regions are rebuilt moves it past this, and the next lookup
	 * resyncs (publishing a later value would swallow that change). */
	const std::uint64_t seq = mrsync_gen_begin(words_, checked_words_);

	Update u(*this);
	for (auto &[key, r] : index_) {
		const std::uint64_t start = r->begin_va(), size = r->size.load();
		/* Out of the page table until the child's device serves it. */
		table_.replace(start, start + size, r, nullptr);
		r->translation.emplace(size);
		if (auto ok = build_region_locked(u, *r, r->access.load(), Want::lookup,
						  Unpinnable::invalid);
		    !ok)
			return ok;
		if (r->state == Region::State::live &&
		    (holes_ok_ || !r->translation->invalid_bytes()))
			claim_table_locked(*r, start, start + size);
	}
	(void)u.finish();
	++stats_.full_resyncs;
	forked_ = false;
	seen_.store(seq, std::memory_order_release);
	log_choice("rebuilt in a fork child");
	return {};
}

} // namespace mrsync::detail
