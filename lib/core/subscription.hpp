/* SPDX-License-Identifier: MIT */
/* Private. The watcher behind mrsync/subscribe.h: event sources of its own,
 * subscriptions by address range, and the poll that drains the sources and
 * calls back the subscriptions a change touches.
 *
 * Whose sources: a watcher is one client of a SourceHub (source_hub.hpp).
 * mrsync_watcher_create() opens a hub of its own; mrsync_ctx_watcher()
 * attaches to the context's, whose other client is the context's resync, so
 * both watch the same memory through one userfaultfd / one module file, and
 * a change one of them drains stays pending for the other.
 *
 * The pollable fd (mrsync_watcher_fd()): an epoll set over each source's
 * wake-up fd (EventSource::enable_wakeup(): the module's file, the
 * user-space sources' eventfds), level-triggered, so the set is readable
 * exactly while one of them is, plus the hub's eventfd for this client
 * (set when another client drained ranges for it). Each clears in drain(), and
 * once the fd exists every poll drains (no quiet() shortcut): the shortcut
 * would leave a spurious wake-up standing and an event loop spinning.
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

#include "source_hub.hpp"
#include "unique_fd.hpp"

namespace mrsync::detail {

class Watcher {
public:
	/** Tag for the tests' negative control: the sources never signal the
	 *  fd (MRSYNC_WATCHER_F_TEST_NO_WAKEUP, mrsync/testing.h). */
	enum class Wakeups { on, test_off };

	/** Opens the sources of `mask` (0: automatic, as a context does). */
	static Result<std::unique_ptr<Watcher>> create(std::uint32_t mask,
						       Wakeups wakeups = Wakeups::on);
	/** A client of `hub`, which the context owning it shares
	 *  (mrsync_ctx_watcher()); the context owns the watcher too. */
	static Result<std::unique_ptr<Watcher>> attach(std::shared_ptr<SourceHub> hub);
	/** Whether a context owns it (mrsync_watcher_destroy() must not). */
	bool borrowed() const noexcept { return borrowed_; }
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
	/** The pollable fd, made at the first call (the same one after).
	 *  ENOTSUP if a source cannot signal one. Any thread. */
	Result<int> fd();

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

	explicit Watcher(std::shared_ptr<SourceHub> hub);
	bool quiet() const noexcept;
	bool drain_locked(std::vector<Range> &changed);
	std::vector<Delivery> match_locked(const std::vector<Range> &changed, bool overflow);
	bool rearm_locked(Subscription &s);
	void unwatch_locked(Subscription &s) noexcept;

	Result<int> open_fd_locked();

	std::shared_ptr<SourceHub> hub_;
	SourceHub::ClientId client_ = 0;
	bool borrowed_ = false;
	std::vector<const std::uint64_t *> words_; /* the sources' generations */
	std::atomic<std::uint64_t> seen_{0};        /* their sum at the last drain */
	std::atomic<bool> rearm_pending_{false};    /* some subscription is not armed */

	std::mutex poll_mu_;
	std::atomic<std::thread::id> poller_{};     /* the thread inside poll() */

	std::mutex mu_;
	std::map<std::uint64_t, Subscription> subs_; /* by id: creation order */
	std::vector<std::uint64_t> unarmed_;          /* ids to watch again at the next poll */
	std::uint64_t next_id_ = 1;
	Wakeups wakeups_ = Wakeups::on;
	UniqueFd epoll_;                    /* mrsync_watcher_fd(); under mu_ */
	std::atomic<bool> polled_{false};   /* epoll_ exists: every poll drains */
};

} // namespace mrsync::detail

#endif
