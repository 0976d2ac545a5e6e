/* SPDX-License-Identifier: MIT */
/* Private. One set of event sources and the consumers ("clients") that drain
 * them: a context's resync and the watchers of mrsync/subscribe.h.
 *
 * Why one set: a mapping can be registered with one userfaultfd only, so a
 * context and a watcher that each opened their own sources could not both
 * watch the same memory (the second got EBUSY), and every change cost two
 * module files, two monitor threads, two drains. A context opens a hub; the
 * watcher mrsync_ctx_watcher() hands out is a second client of the same hub;
 * a watcher made by mrsync_watcher_create() has a hub of its own.
 *
 * Why per-client pending ranges: a source's ring has one consumer. Whoever
 * drains it here takes the ranges for itself and leaves a copy pending for
 * every other client (the fan-out), so a change drained by a subscriber's
 * poll is still applied by the context's next resync, and the reverse. Each
 * client keeps its own `seen` generation (the context its seen_, a watcher
 * its own), so the generation words still tell each of them that something
 * moved: a client whose words moved drains, and finds here what another
 * client took from the sources meanwhile. Pending ranges are bounded: past
 * kMaxPending they are merged, and if still too many collapse into
 * "overflow" (resync everything), as a full ring does -- coalesced, never
 * lost.
 *
 * The hit path reads the sources' generation words directly (generation()):
 * nothing here is on it.
 *
 * Locking: mu_ serialises every call into the sources (their contract: one
 * caller at a time) and the pending lists. It is taken under a client's own
 * lock (the context lock, a watcher's mu_), never the other way round, and
 * held only for source calls and list moves: no client code runs under it. */
#ifndef MRSYNC_SOURCE_HUB_HPP
#define MRSYNC_SOURCE_HUB_HPP

#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include <mrsync/result.hpp>
#include <mrsync/source.hpp>

#include "unique_fd.hpp"

namespace mrsync::detail {

class SourceHub {
public:
	/** Tag for the tests' negative control (MRSYNC_CTX_F_TEST_NO_FANOUT):
	 *  a drain keeps what it took for its own client only, as two
	 *  consumers of one ring would without this class. */
	enum class Fanout { on, test_off };
	using ClientId = std::uint32_t;

	/** What a drain found besides the ranges. */
	struct Drained {
		bool overflow = false;       /**< some lost: everything changed */
		bool unsettled_lost = false; /**< treat every range as unsettled */
	};

	SourceHub(std::vector<std::unique_ptr<EventSource>> sources, Fanout fanout) noexcept;
	~SourceHub();
	SourceHub(const SourceHub &) = delete;
	SourceHub &operator=(const SourceHub &) = delete;

	/** The sources, in the order of their MRSYNC_SOURCE_* bits. Stable. */
	std::size_t size() const noexcept { return sources_.size(); }
	/** Source i's generation word (the hit path loads it). Any thread. */
	const std::uint64_t *generation(std::size_t i) const noexcept
	{
		return sources_[i]->generation();
	}
	std::string_view name(std::size_t i) const noexcept { return sources_[i]->name(); }
	/** The manual source's input, or nullptr. Its notify() is thread-safe
	 *  and needs no lock here. */
	ManualInput *manual() const noexcept;

	/** A new consumer: from now on every drain leaves it a copy. */
	ClientId join();
	/** The consumer is gone: nothing more is kept for it. */
	void leave(ClientId client) noexcept;

	/** EventSource::watch/unwatch/prepare_pin of source i, serialised.
	 *  After abandon(): ENODEV, nothing. Any thread. */
	Result<std::uint64_t> watch(std::size_t i, std::uint64_t va, std::uint64_t len);
	void unwatch(std::size_t i, std::uint64_t handle) noexcept;
	Status prepare_pin(std::size_t i, std::uint64_t handle, Range range);

	/**
	 * Appends to `changed` (and `unsettled`) what `client` has not taken yet:
	 * what other clients drained for it since its last drain, then what the
	 * sources reported (a copy of which is left pending for the others).
	 * The caller reads its generation (mrsync_gen_begin) before calling:
	 * a change after that moves the words again, whoever drains it.
	 * Any thread; called under the client's own lock.
	 */
	Drained drain(ClientId client, std::vector<Range> &changed, std::vector<Range> &unsettled);

	/** EventSource::enable_wakeup of source i, serialised. */
	Result<int> enable_wakeup(std::size_t i);
	/** An eventfd that polls readable while `client` has ranges pending
	 *  that another client drained (it is the sources' fds' complement: a
	 *  drain clears those). Readable once right after the first call;
	 *  drain(client) clears it before it takes the ranges. The same fd on
	 *  every call; it stays the hub's. */
	Result<int> client_wakeup(ClientId client);

	/** Fork child: every source drops its kernel objects untouched; every
	 *  later call is a no-op (ENODEV). The hub stays allocated while anyone
	 *  may still load its generation words. */
	void abandon() noexcept;
	/** The lock every call takes, for the fork guard only (fork_guard.cpp
	 *  holds it across fork() so a child never inherits it held). */
	std::mutex &fork_lock() noexcept { return mu_; }

	/** Pending ranges a client may accumulate (merged) before they
	 *  collapse into an overflow: a client that does not drain costs
	 *  bounded memory. */
	static constexpr std::size_t kMaxPending = 4096;

private:
	struct Client {
		bool live = false;
		Drained flags;
		std::vector<Range> changed, unsettled;
		UniqueFd wake; /* client_wakeup(); -1 until asked */
	};
	void keep_locked(Client &c, const std::vector<Range> &changed,
			 const std::vector<Range> &unsettled, Drained flags) noexcept;

	std::vector<std::unique_ptr<EventSource>> sources_;
	const Fanout fanout_;
	std::mutex mu_;
	std::vector<Client> clients_; /* by ClientId; a left slot is reused */
	bool abandoned_ = false;
};

} // namespace mrsync::detail

#endif
