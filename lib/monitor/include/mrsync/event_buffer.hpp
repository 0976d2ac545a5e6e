/* SPDX-License-Identifier: MIT */
/**
 * @file
 * EventBuffer: the user-space generation counter + bounded buffer of changed
 * ranges that user-space event sources publish (userfaultfd monitor, manual
 * notifications, DPDK memory events), and BufferedEventSource, the part of an
 * EventSource that every such source shares.
 *
 * Not a ring: producers append to one vector of fixed capacity, and drain()
 * swaps it with a second one (double buffering), so neither side ever
 * allocates under the lock. (The kernel module's ring, read by the kmod
 * source, is a real ring.)
 *
 * Protocol (source.hpp): a producer appends ranges, then bumps the generation
 * with a release store; the hit path reads the generation with one acquire
 * load and nothing else. A consumer loads the generation *before* it drains,
 * remembers that value, and drains: whatever was appended after its load is
 * either in this drain or behind a later bump.
 *
 * A full buffer never blocks and never fails: the ranges that do not fit are
 * counted as lost and the next drain() returns true once ("resync
 * everything"). A range that overlaps or touches the last one still in the
 * buffer is merged into it (an event may be coalesced, never lost).
 *
 * Lock rules, because producers can run where locks are dangerous (a thread
 * blocked in munmap() waits for the userfaultfd monitor; DPDK calls its memory
 * callbacks under the memory hotplug lock):
 *  - The buffer's lock is held only for O(1) work on memory reserved at
 *    construction: no allocation, no system call, no other lock inside it.
 *    So no thread can ever be blocked in munmap()/madvise() while holding it.
 *  - drain() copies into the caller's vector (which may allocate, and through
 *    free() even madvise or munmap heap memory) *outside* that lock; only a
 *    second lock, which producers never take, is held then.
 *
 * Wake-ups (enable_wakeup(), for a consumer that sleeps in poll/epoll): a
 * producer writes an eventfd after its bump, outside mu_ (one non-blocking
 * write, no allocation); drain() reads it before it takes the ranges.
 * Without enable_wakeup() no producer makes a system call.
 */
#ifndef MRSYNC_EVENT_BUFFER_HPP
#define MRSYNC_EVENT_BUFFER_HPP

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include <unistd.h>

#include <mrsync/source.hpp>

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)

namespace mrsync {

/** Buffer size used when a SourceConfig asks for 0 entries. */
inline constexpr std::uint32_t kDefaultEventEntries = 1024;

class EventBuffer {
public:
	/** Counters, for tests and telemetry. */
	struct Stats {
		std::uint64_t appended = 0;  /**< ranges accepted (merged ones included) */
		std::uint64_t coalesced = 0; /**< ranges merged into the previous one */
		std::uint64_t lost = 0;      /**< ranges dropped because the buffer was full */
		std::uint64_t overflows = 0; /**< drains that reported an overflow */
	};

	/**
	 * Reserves room for `entries` ranges (0 = kDefaultEventEntries); nothing
	 * allocates after construction.
	 * Thread safety: construct before sharing.
	 */
	explicit EventBuffer(std::uint32_t entries = 0);
	/** Closes the wake-up eventfd. Thread safety: no producer may run. */
	~EventBuffer()
	{
		if (const int fd = wake_fd_.load(std::memory_order_relaxed); fd >= 0)
			::close(fd);
	}
	EventBuffer(const EventBuffer &) = delete;
	EventBuffer &operator=(const EventBuffer &) = delete;

	/**
	 * The counter the hit path loads; stable for the buffer's lifetime and
	 * alone on its cache line (producers write it, every reader only reads).
	 * Thread safety: any thread; read it with an acquire load.
	 */
	const std::uint64_t *generation() const noexcept { return &generation_; }

	/** @return the generation (one acquire load).
	 *  Thread safety: any thread, no lock, no allocation. */
	std::uint64_t load_generation() const noexcept
	{
		return std::atomic_ref<std::uint64_t>(generation_).load(std::memory_order_acquire);
	}

	/**
	 * Appends one changed range, then bumps the generation (release).
	 * Never blocks on a consumer and never allocates.
	 * Thread safety: any thread; takes the buffer lock for O(1) work.
	 */
	void append(Range changed) noexcept { append(std::span<const Range>(&changed, 1)); }

	/** Appends every range of a batch, then bumps the generation once.
	 *  Thread safety: as append(Range). */
	void append(std::span<const Range> changed) noexcept;

	/**
	 * Moves the generation *before* the ranges are known, for a producer
	 * whose change can become visible to the application before it has the
	 * ranges in hand: a thread blocked in munmap() is woken by the read()
	 * that dequeues its userfaultfd event, i.e. before the monitor can
	 * append. Until the matching publish(), drain() waits for the batch, so
	 * a reader that saw this bump still finds the ranges. The announcer must
	 * reach publish() without blocking (no lock, no allocation, no wait).
	 * Thread safety: any thread; takes the buffer lock for O(1) work.
	 */
	void announce() noexcept;

	/** Appends an announced batch (possibly empty), ends the announcement
	 *  and bumps the generation if anything was appended.
	 *  Thread safety: the thread that called announce(). */
	void publish(std::span<const Range> changed) noexcept;

	/**
	 * Moves the ranges appended since the last drain to the end of `out`.
	 * Waits for an announced batch to be published (a bounded wait: the
	 * announcer never blocks); if that takes longer than a second, reports
	 * an overflow instead of waiting on.
	 * @return true if ranges were lost since the last drain (or could not be
	 *         handed over): resync everything. Reported once per loss.
	 * Thread safety: any thread; may be called with the caller's own locks
	 * held, since producers never wait for a consumer.
	 */
	bool drain(std::vector<Range> &out);

	/**
	 * From now on every append (and non-empty publish) also signals an
	 * eventfd, which drain() clears before it takes the ranges; readable
	 * once right away (see EventSource::enable_wakeup()).
	 * @return the eventfd (the buffer's; the same one on every call), or
	 *         the errno of eventfd(2) with its text.
	 * Thread safety: any thread; producers may be running.
	 */
	Result<int> enable_wakeup();

	/** @return the counters. Thread safety: any thread; takes the buffer lock. */
	Stats stats() const noexcept;

	/** @return the number of ranges the buffer holds. Thread safety: any thread. */
	std::uint32_t capacity() const noexcept { return capacity_; }

private:
	void push_locked(std::span<const Range> changed) noexcept;
	void bump() noexcept;
	void wake() noexcept;

	/* Written by producers, read by every hit path: nothing else may share
	 * its cache line, hence the alignment of the members around it. */
	alignas(64) mutable std::uint64_t generation_ = 0;

	alignas(64) mutable std::mutex mu_; /* guards everything below but announced_ */
	std::vector<Range> entries_; /* capacity_ reserved, never grows */
	/* Batches announced and not yet published. drain() polls it rather than
	 * waiting on a condition variable: a fork child must be able to destroy
	 * the buffer even if a parent thread was waiting in drain() at fork time
	 * (pthread_cond_destroy would wait for that waiter forever). */
	std::atomic<std::uint32_t> announced_{0};
	bool lost_since_drain_ = false;
	Stats stats_{};

	/* Drain side: spare_ is swapped with entries_ under mu_, then copied to
	 * the caller under drain_mu_ only. Producers never take drain_mu_. */
	std::mutex drain_mu_;
	std::vector<Range> spare_;
	std::uint32_t capacity_;

	/* The eventfd of enable_wakeup(), -1 until then; set once. */
	std::atomic<int> wake_fd_{-1};
	std::mutex wake_mu_; /* serialises enable_wakeup(); producers never take it */
};

/**
 * Most of an EventSource for a source that owns an EventBuffer: the generation
 * and drain() come from the buffer; the source produces into events().
 * (The kernel-module source reads the module's ring instead.)
 */
class BufferedEventSource : public EventSource {
public:
	/** Thread safety: any thread, no lock. */
	const std::uint64_t *generation() const noexcept final { return events_.generation(); }

	/** See EventBuffer::drain(). Thread safety: any thread. */
	bool drain(std::vector<Range> &out) final { return events_.drain(out); }

	/** The buffer's eventfd (EventBuffer::enable_wakeup()): signalled where
	 *  the source produces (the userfaultfd monitor thread, the manual
	 *  source's notify(), DPDK's memory-event callback).
	 *  Thread safety: any thread. */
	Result<int> enable_wakeup() final { return events_.enable_wakeup(); }

	/** The buffer this source produces into. Thread safety: any thread. */
	EventBuffer &events() noexcept { return events_; }
	const EventBuffer &events() const noexcept { return events_; }

protected:
	explicit BufferedEventSource(std::uint32_t ring_entries) : events_(ring_entries) {}

private:
	EventBuffer events_;
};

} // namespace mrsync
#pragma GCC visibility pop

#endif
