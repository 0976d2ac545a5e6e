/* SPDX-License-Identifier: MIT */
/* The driver sequence, pin -> create/map -> fence -> unpin (updater.hpp).
 * Context lock held throughout. */
#include "updater.hpp"

#include <algorithm>

#include <mrsync/log.hpp>

#include "context.hpp"

namespace mrsync::detail {

Update::~Update()
{
	if (!finished_)
		(void)finish(); /* a failed fence is logged there */
}

Result<std::vector<Extent>> Update::pin(std::uint64_t base, std::uint64_t va, std::uint64_t len,
					std::span<const Range> skip, Backings::Holes holes)
{
	if (skip.empty()) /* the common case: the pin's own list, not a copy */
		return ctx_.backings_->pin(base, va, len, holes);
	std::vector<Extent> extents;
	std::uint64_t at = va;
	auto pin_to = [&](std::uint64_t end) -> Status {
		if (at >= end)
			return {};
		auto part = ctx_.backings_->pin(base, at, end - at, holes);
		if (!part)
			return std::move(part).error();
		extents.insert(extents.end(), part->begin(), part->end());
		return {};
	};
	for (const Range &s : skip) {
		if (auto ok = pin_to(s.start); !ok)
			return std::move(ok).error();
		if (!extents.empty() && extents.back().backing == kNoBacking)
			extents.back().length += s.end - s.start;
		else
			extents.push_back({s.start - base, s.end - s.start, kNoBacking});
		at = s.end;
	}
	if (auto ok = pin_to(va + len); !ok)
		return std::move(ok).error();
	return extents;
}

Status Update::create(Region &r, std::uint32_t access, std::span<const Range> skip,
		      Backings::Holes holes)
{
	const std::uint64_t start = r.begin_va(), size = r.size.load(std::memory_order_relaxed);
	auto extents = pin(start, start, size, skip, holes);
	if (!extents)
		return std::move(extents).error();
	Translation t = Translation::of(size, std::move(*extents));
	auto keys = ctx_.driver_->create(start, size, access, t.extents());
	if (!keys)
		return std::move(keys).error();
	for (const auto &e : t.extents())
		if (e.backing != kNoBacking)
			ctx_.backings_->use(e.backing, e.length);
	r.translation.emplace(std::move(t));
	r.keys.store(pack_keys(*keys), std::memory_order_relaxed);
	r.has_invalid.store(r.translation->invalid_bytes() != 0, std::memory_order_relaxed);
	return {};
}

Status Update::apply(Region &r, std::uint64_t offset, std::uint64_t len,
		     std::span<const Extent> extents)
{
	change(r, offset, len, extents);
	return commit(r, extents);
}

Status Update::invalidate(Region &r, std::span<const Range> runs)
{
	for (const Range &run : runs) {
		const Extent invalid{run.start, run.end - run.start, kNoBacking};
		change(r, run.start, invalid.length, {&invalid, 1});
	}
	return commit(r, {});
}

void Update::change(Region &r, std::uint64_t offset, std::uint64_t len,
		    std::span<const Extent> extents)
{
	ctx_.bump_epoch(); /* kept entries may hold the old keys or pages */
	unpublish(r, extents);
	Backings &backings = *ctx_.backings_;
	changed_.push_back({offset, offset + len});
	r.translation->replace(offset, len, extents, [&](BackingId b, std::uint64_t n) {
		backings.unuse(b, n);
		replaced_ = true;
	});
	for (const auto &e : extents)
		if (e.backing != kNoBacking)
			backings.use(e.backing, e.length);
}

Status Update::commit(Region &r, std::span<const Extent> published)
{
	if (r.keys_destroyed) { /* retired, its keys gone from the device: nothing to map */
		changed_.clear();
		return {};
	}
	const Keys old_keys = r.current_keys();
	relieve_crowding(r);
	/* The driver is told which entries changed, so it can rewrite just
	 * those (driver.hpp, map_changed); sorted and merged, as it asks. */
	std::sort(changed_.begin(), changed_.end(),
		  [](const Range &a, const Range &b) { return a.start < b.start; });
	std::size_t n = 0;
	for (const Range &c : changed_)
		if (n && c.start <= changed_[n - 1].end)
			changed_[n - 1].end = std::max(changed_[n - 1].end, c.end);
		else
			changed_[n++] = c;
	changed_.resize(n);
	auto keys = ctx_.driver_->map_changed(old_keys, r.translation->extents(), changed_);
	changed_.clear();
	if (!keys) {
		/* The device kept the old translation: it must not be used
		 * again. A page the application unmapped meanwhile (EFAULT) is
		 * its doing, not an error of ours; anything else is worth a
		 * warning. */
		if (keys.error().code == EFAULT)
			MRSYNC_LOG(debug, "core", "retiring a registration whose pages went away: %s",
				   keys.error().message.c_str());
		else
			MRSYNC_LOG(warning, "core", "the device could not map a registration, "
				   "retiring it: %s", keys.error().message.c_str());
		revoke(r, old_keys);
		ctx_.retire_locked(r);
		return std::move(keys).error();
	}
	if (*keys != old_keys) {
		r.keys.store(pack_keys(*keys), std::memory_order_relaxed);
		report_key_change(r, old_keys, *keys);
	}
	r.has_invalid.store(r.translation->invalid_bytes() != 0, std::memory_order_relaxed);
	publish(r, published);
	return {};
}

void Update::revoke(Region &r, Keys keys) noexcept
{
	/* The keys outlive the lookups: a peer keeps its rkey, a holder posts
	 * until its put. Through them the device still reaches what this
	 * update replaces -- pages it unpins after its fence, slots a pin may
	 * reuse. So the device must refuse them before that fence: every entry
	 * invalid (the keys stay allocated, so no new registration can get
	 * them while a stale user is out there), or, if the device refuses that
	 * too, the keys destroyed now rather than at reclaim. */
	if (!ctx_.revoke_refused_)
		return;
	const std::uint64_t size = r.size.load(std::memory_order_relaxed);
	const Extent none{0, size, kNoBacking};
	if (auto revoked = ctx_.driver_->map(keys, {&none, 1}); revoked) {
		/* a device that re-keys on a map (verbs) dropped the old keys:
		 * the new ones are what reclaim must destroy */
		r.keys.store(pack_keys(*revoked), std::memory_order_relaxed);
		return;
	}
	MRSYNC_LOG(warning, "core", "the device refused to invalidate a retired registration "
		   "too: destroying its keys now");
	ctx_.driver_->destroy(keys);
	r.keys_destroyed = true;
	replaced_ = true; /* the fence must come before anything is unpinned */
}

void Update::destroy(Region &r, bool device_gone) noexcept
{
	if (!device_gone && !r.keys_destroyed)
		ctx_.driver_->destroy(r.current_keys());
	r.keys_destroyed = false;
	r.translation->for_each_backing([this](BackingId b, std::uint64_t n) {
		ctx_.backings_->unuse(b, n);
		replaced_ = true;
	});
	r.translation.reset();
}

void Update::unpublish(Region &r, std::span<const Extent> extents) noexcept
{
	const std::uint64_t base = r.begin_va();
	bool invalid = false;
	for (const auto &e : extents)
		if (e.backing == kNoBacking) {
			ctx_.table_.replace(base + e.offset, base + e.offset + e.length, &r, nullptr);
			invalid = true;
		}
	if (invalid)
		r.has_invalid.store(1, std::memory_order_relaxed);
	/* A driver whose registrations serve nothing while they have a hole:
	 * no page of r may hit until a lookup re-pinned them all. */
	if (invalid && !ctx_.holes_ok_)
		ctx_.table_.replace(base, r.end_va(), &r, nullptr);
}

void Update::publish(Region &r, std::span<const Extent> extents) noexcept
{
	if (!ctx_.holes_ok_ && r.translation->invalid_bytes())
		return;
	const std::uint64_t base = r.begin_va();
	for (const auto &e : extents)
		if (e.backing != kNoBacking)
			ctx_.table_.replace(base + e.offset, base + e.offset + e.length, nullptr, &r);
}

/* A driver that cannot keep keys (verbs without rereg) just changed them:
 * count it and tell the application, whose peers hold the old rkey. */
void Update::report_key_change(const Region &r, Keys old_keys, Keys new_keys)
{
	++ctx_.stats_.key_changes;
	const mrsync_params &params = ctx_.params_;
	if (!params.on_key_change)
		return;
	const mrsync_key_change change{r.begin_va(), r.size.load(std::memory_order_relaxed),
				       old_keys.lkey, old_keys.rkey, new_keys.lkey, new_keys.rkey};
	params.on_key_change(params.on_key_change_arg, &change);
}

Status Update::finish()
{
	finished_ = true;
	if (!replaced_ && !ctx_.backings_->release_pending())
		return {}; /* nothing replaced, nothing to unpin: no fence due */
	replaced_ = false;
	auto fenced = ctx_.driver_->fence();
	if (!fenced) {
		/* Without a fence nothing may be unpinned: keep the stale pins,
		 * they are counted and retried at the next update. */
		MRSYNC_LOG(error, "core", "fence failed, keeping replaced pages pinned: %s",
			   fenced.error().message.c_str());
		return fenced;
	}
	const std::size_t released = ctx_.backings_->release_unused();
	if (released)
		MRSYNC_LOG(debug, "core", "fenced, %zu backings unpinned", released);
	return {};
}

} // namespace mrsync::detail
