/* SPDX-License-Identifier: MIT */
/* The watcher (subscription.hpp): subscribe = watch in every source and ask
 * them to vouch, as the cache does before a pin (but nothing is pinned);
 * poll = the generation check, drain, match against the subscriptions,
 * watch again what was replaced, then the callbacks with no lock held. */
#include "subscription.hpp"

#include <algorithm>
#include <cinttypes>
#include <string>

#include <sys/epoll.h>
#include <unistd.h>

#include <mrsync/generation.h>
#include <mrsync/mrsync.h>

#include "context.hpp"
#include "format.hpp"
#include "range_set.hpp"

namespace mrsync::detail {

Watcher::Watcher(std::shared_ptr<SourceHub> hub) : hub_(std::move(hub)), client_(hub_->join())
{
	for (std::size_t i = 0; i < hub_->size(); ++i)
		words_.push_back(hub_->generation(i));
	seen_.store(mrsync_gen_begin(words_.data(), std::uint32_t(words_.size())));
}

Result<std::unique_ptr<Watcher>> Watcher::create(std::uint32_t mask, Wakeups wakeups)
{
	auto hub = open_hub(mask, SourceConfig{}, SourceHub::Fanout::on);
	if (!hub)
		return std::move(hub).error();
	std::unique_ptr<Watcher> w(new Watcher(std::move(hub.value())));
	w->wakeups_ = wakeups;
	return w;
}

Result<std::unique_ptr<Watcher>> Watcher::attach(std::shared_ptr<SourceHub> hub)
{
	std::unique_ptr<Watcher> w(new Watcher(std::move(hub)));
	w->borrowed_ = true;
	return w;
}

Watcher::~Watcher()
{
	std::lock_guard guard(mu_);
	for (auto &[id, s] : subs_)
		unwatch_locked(s);
	hub_->leave(client_);
}

void Watcher::unwatch_locked(Subscription &s) noexcept
{
	for (std::size_t i = 0; i < s.watches.size(); ++i)
		if (s.watches[i])
			hub_->unwatch(i, s.watches[i]);
	s.watches.clear();
}

/* Asks every source that watches `s` to watch what is mapped there now (the
 * userfaultfd source registers a mapping that replaced the watched one) and
 * to vouch for it. @return whether one vouched. */
bool Watcher::rearm_locked(Subscription &s)
{
	bool vouched = false;
	for (std::size_t i = 0; i < s.watches.size(); ++i)
		if (s.watches[i] && hub_->prepare_pin(i, s.watches[i], s.range))
			vouched = true;
	return vouched;
}

Result<std::uint64_t> Watcher::subscribe(Range range, mrsync_change_fn fn, void *arg)
{
	Subscription s{range, fn, arg, {}};
	std::string reasons;
	std::optional<Error> other;
	std::lock_guard guard(mu_);
	for (std::size_t i = 0; i < hub_->size(); ++i) {
		auto handle = hub_->watch(i, range.start, range.end - range.start);
		s.watches.push_back(handle ? *handle : 0);
		if (handle)
			continue;
		if (handle.error().code != ENOTSUP && !other)
			other = handle.error();
		reasons += (reasons.empty() ? "" : "; ") + handle.error().message;
	}
	/* The cache's rule (prepare_pin_locked): one source that sees every
	 * change of what is mapped there, else a clear refusal. */
	for (std::size_t i = 0; i < s.watches.size(); ++i) {
		if (!s.watches[i])
			continue;
		auto ok = hub_->prepare_pin(i, s.watches[i], range);
		if (ok) {
			const std::uint64_t id = next_id_++;
			subs_.emplace(id, std::move(s));
			return id;
		}
		if (ok.error().code != ENOTSUP && !other)
			other = ok.error();
		reasons += (reasons.empty() ? "" : "; ") + ok.error().message;
	}
	unwatch_locked(s);
	if (other)
		return std::move(*other);
	return make_error(ENOTSUP, fmt("addr, len: no event source of this watcher can see every "
				       "change of [0x%" PRIx64 ", 0x%" PRIx64 "): %s",
				       range.start, range.end,
				       reasons.empty() ? "none watches it" : reasons.c_str()));
}

Status Watcher::unsubscribe(std::uint64_t id)
{
	/* From a callback the poll is ours: its delivery loop re-checks subs_
	 * before every call. From another thread, wait for the poll to end. */
	std::unique_lock<std::mutex> polling;
	if (poller_.load() != std::this_thread::get_id())
		polling = std::unique_lock(poll_mu_);
	std::lock_guard guard(mu_);
	auto it = subs_.find(id);
	if (it == subs_.end())
		return make_error(ENOENT, fmt("id: no subscription %" PRIu64 " in this watcher", id));
	unwatch_locked(it->second);
	subs_.erase(it);
	return {};
}

bool Watcher::quiet() const noexcept
{
	return !mrsync_gen_retry(words_.data(), std::uint32_t(words_.size()),
				 seen_.load(std::memory_order_relaxed)) &&
	       !rearm_pending_.load(std::memory_order_relaxed);
}

/* Moves what every source reported into `changed`. @return overflow. */
bool Watcher::drain_locked(std::vector<Range> &changed)
{
	/* Before draining: a change after this moves the sum again, whichever
	 * client of the hub drains it (it leaves us a copy). */
	seen_.store(mrsync_gen_begin(words_.data(), std::uint32_t(words_.size())));
	std::vector<Range> unsettled; /* the cache's concern (pins), not ours */
	return hub_->drain(client_, changed, unsettled).overflow;
}

std::vector<Watcher::Delivery> Watcher::match_locked(const std::vector<Range> &drained,
						     bool overflow)
{
	/* Page-aligned and merged: each changed part is delivered once. */
	const std::uint64_t page = std::uint64_t(sysconf(_SC_PAGESIZE));
	RangeSet changed;
	for (const Range &r : drained)
		changed.add({r.start & ~(page - 1), (r.end + page - 1) & ~(page - 1)});
	std::vector<Delivery> out;
	std::vector<std::uint64_t> touched;
	for (auto &[id, s] : subs_) {
		const std::size_t before = out.size();
		if (overflow)
			out.push_back({{s.range.start, s.range.end, id, MRSYNC_CHANGE_F_OVERFLOW, 0},
				       s.fn, s.arg});
		else
			for (const Range &c : changed.intersect(s.range))
				out.push_back({{c.start, c.end, id, 0, 0}, s.fn, s.arg});
		if (out.size() != before)
			touched.push_back(id);
	}
	/* Watch again what replaced the changed memory, before the callbacks:
	 * a change after this poll must be reported to the next one. */
	touched.insert(touched.end(), unarmed_.begin(), unarmed_.end());
	std::sort(touched.begin(), touched.end());
	touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
	unarmed_.clear();
	for (std::uint64_t id : touched) {
		auto it = subs_.find(id);
		if (it != subs_.end() && !rearm_locked(it->second))
			unarmed_.push_back(id); /* not mapped (yet): try at every poll */
	}
	rearm_pending_.store(!unarmed_.empty(), std::memory_order_relaxed);
	return out;
}

Result<int> Watcher::poll()
{
	if (poller_.load() == std::this_thread::get_id())
		return make_error(EDEADLK, "watcher: mrsync_watcher_poll() called from one of its "
					   "own callbacks");
	if (!polled_.load(std::memory_order_acquire) && quiet())
		return 0;
	std::lock_guard polling(poll_mu_);
	std::vector<Delivery> deliveries;
	{
		std::lock_guard guard(mu_);
		std::vector<Range> changed;
		const bool overflow = drain_locked(changed);
		deliveries = match_locked(changed, overflow);
	}
	poller_.store(std::this_thread::get_id());
	int calls = 0;
	for (const Delivery &d : deliveries) {
		{
			std::lock_guard guard(mu_); /* unsubscribed by an earlier callback? */
			if (!subs_.count(d.change.subscription))
				continue;
		}
		d.fn(d.arg, &d.change);
		++calls;
	}
	poller_.store(std::thread::id{});
	return calls;
}

Result<int> Watcher::fd()
{
	std::lock_guard guard(mu_); /* our drain runs under it; another client's
				     * drain meanwhile sets client_wakeup() */
	if (epoll_)
		return epoll_.get();
	return open_fd_locked();
}

Result<int> Watcher::open_fd_locked()
{
	UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
	if (!epoll) {
		const int err = errno;
		return make_error(err, "watcher: epoll_create1: " + errno_text(err));
	}
	/* Each source's fd, then the hub's for this client (a drain by the
	 * other client -- the context's resync -- clears the sources' fds and
	 * sets that one instead). */
	for (std::size_t i = 0; i <= hub_->size(); ++i) {
		if (wakeups_ == Wakeups::test_off)
			break; /* the negative control: nothing ever makes the set readable */
		const bool source = i < hub_->size();
		const std::string what = source ? "the " + std::string(hub_->name(i)) + " source"
						: std::string("the shared sources' hand-over");
		auto wake = source ? hub_->enable_wakeup(i) : hub_->client_wakeup(client_);
		if (!wake)
			return make_error(wake.error().code, "watcher: " + what +
								     " cannot wake a poller: " +
								     wake.error().message);
		epoll_event ev{};
		ev.events = EPOLLIN;
		ev.data.u64 = 0;
		if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, *wake, &ev) != 0) {
			const int err = errno;
			return make_error(err, "watcher: epoll_ctl(ADD) of " + what +
						       "'s fd: " + errno_text(err));
		}
	}
	epoll_ = std::move(epoll);
	polled_.store(true, std::memory_order_release);
	return epoll_.get();
}

Status Watcher::notify_unmap(Range range)
{
	if (auto *manual = hub_->manual())
		return manual->notify(range);
	return make_error(ENOTSUP, "watcher: no manual source (create it with "
				   "MRSYNC_SOURCE_MANUAL in sources)");
}

} // namespace mrsync::detail
