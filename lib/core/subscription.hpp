/* SPDX-License-Identifier: MIT */
/* Private. The watcher behind mrsync/subscribe.h: event sources of its own,
 * subscriptions by address range, and the poll that drains the sources and
 * calls back the subscriptions a change touches.
 *
 * Why its own sources rather than the context's: a source's ring has one
 * consumer, and the context's is its resync (resync.cpp). Making the cache a
 * client of the watcher means moving that drain here and the context's
 * watch/prepare_pin calls behind subscriptions; docs/integration.md ("The
 * cache as a subscriber") says what that takes.
 *
 * Locking: poll_mu_ serialises polls and is what mrsync_unsubscribe() waits
 * on; mu_ guards subs_ and is never held across a callback. Order: poll_mu_
 * before mu_. */
#ifndef MRSYNC_SUBSCRIPTION_HPP
#define MRSYNC_SUBSCRIPTION_HPP

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <mrsync/result.hpp>
#include <mrsync/source.hpp>
#include <mrsync/subscribe.h>

namespace mrsync::detail {

class Watcher {
public:
	/** Opens the sources of `mask` (0: automatic, as a context does). */
	static Result<std::unique_ptr<Watcher>> create(std::uint32_t mask);
	~Watcher();
	Watcher(const Watcher &) = delete;
	Watcher &operator=(const Watcher &) = delete;

	/** Watches `range` (page-aligned) in every source; refuses it unless
	 *  one of them vouches that it sees every change there. Any thread. */
	Result<std::uint64_t> subscribe(Range range, mrsync_change_fn fn, void *arg);
	/** Any thread; waits for a poll running on another one. */
	Status unsubscribe(std::uint64_t id);
	/** @return the callbacks made. Any thread but a callback's. */
	Result<int> poll();
	/** The manual source's report. Any thread. */
	Status notify_unmap(Range range);

private:
	struct Subscription {
		Range range;
		mrsync_change_fn fn;
		void *arg;
		std::vector<std::uint64_t> watches; /* one handle a source, 0: none */
	};
	struct Delivery {
		mrsync_change change;
		mrsync_change_fn fn;
		void *arg;
	};

	Watcher() = default;
	bool quiet() const noexcept;
	bool drain_locked(std::vector<Range> &changed);
	std::vector<Delivery> match_locked(const std::vector<Range> &changed, bool overflow);
	bool rearm_locked(Subscription &s);
	void unwatch_locked(Subscription &s) noexcept;

	std::vector<std::unique_ptr<EventSource>> sources_;
	std::vector<const std::uint64_t *> words_; /* the sources' generations */
	std::atomic<std::uint64_t> seen_{0};        /* their sum at the last drain */
	std::atomic<bool> rearm_pending_{false};    /* some subscription is not armed */

	std::mutex poll_mu_;
	std::atomic<std::thread::id> poller_{};     /* the thread inside poll() */

	std::mutex mu_;
	std::map<std::uint64_t, Subscription> subs_; /* by id: creation order */
	std::vector<std::uint64_t> unarmed_;          /* ids to watch again at the next poll */
	std::uint64_t next_id_ = 1;
};

} // namespace mrsync::detail

#endif
