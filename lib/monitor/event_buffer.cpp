/* SPDX-License-Identifier: MIT */
/* The user-space generation + event buffer (see mrsync/event_buffer.hpp for the
 * protocol and the lock rules this file keeps). */
#include <mrsync/event_buffer.hpp>

#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "format.hpp"

namespace mrsync {

namespace {
/* An announced batch is published within microseconds; waiting longer means
 * the announcer is gone or starved, and a full resync is always correct. */
constexpr auto kAnnounceWait = std::chrono::seconds(1);
} // namespace

EventBuffer::EventBuffer(std::uint32_t entries)
	: capacity_(entries ? entries : kDefaultEventEntries)
{
	/* All the memory the buffer will ever use, reserved now: producers must
	 * never allocate (see the header). */
	entries_.reserve(capacity_);
	spare_.reserve(capacity_);
}

void EventBuffer::bump() noexcept
{
	/* Release: whoever acquires the new value sees the ranges pushed before
	 * it (drain() also takes mu_, which orders them by itself). */
	std::atomic_ref<std::uint64_t>(generation_).fetch_add(1, std::memory_order_release);
}

/* After the bump, outside mu_: a poller woken by this finds the ranges. A
 * full counter (EAGAIN, after 2^64 - 2 unread signals) is readable anyway. */
void EventBuffer::wake() noexcept
{
	const int fd = wake_fd_.load(std::memory_order_acquire);
	if (fd < 0)
		return;
	const std::uint64_t one = 1;
	[[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
}

Result<int> EventBuffer::enable_wakeup()
{
	std::lock_guard lock(wake_mu_);
	if (const int fd = wake_fd_.load(std::memory_order_relaxed); fd >= 0)
		return fd;
	const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (fd < 0) {
		const int err = errno;
		return make_error(err, "event buffer: eventfd: " + detail::errno_text(err));
	}
	/* Readable at once: what was appended before this call is pending too. */
	const std::uint64_t one = 1;
	[[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
	wake_fd_.store(fd, std::memory_order_release);
	return fd;
}

void EventBuffer::push_locked(std::span<const Range> changed) noexcept
{
	for (const Range &range : changed) {
		++stats_.appended;
		if (!entries_.empty()) {
			Range &last = entries_.back();
			if (range.start <= last.end && range.end >= last.start) {
				last.start = std::min(last.start, range.start);
				last.end = std::max(last.end, range.end);
				++stats_.coalesced;
				continue;
			}
		}
		if (entries_.size() == capacity_) {
			++stats_.lost;
			lost_since_drain_ = true;
			continue;
		}
		entries_.push_back(range); /* within the reserved capacity */
	}
}

void EventBuffer::append(std::span<const Range> changed) noexcept
{
	{
		std::lock_guard lock(mu_);
		push_locked(changed);
	}
	bump();
	wake();
}

void EventBuffer::announce() noexcept
{
	/* Counted before the bump: a reader that acquires the new generation
	 * also sees the announcement, and drain() waits for the batch. */
	announced_.fetch_add(1, std::memory_order_seq_cst);
	bump();
}

void EventBuffer::publish(std::span<const Range> changed) noexcept
{
	{
		std::lock_guard lock(mu_);
		push_locked(changed);
	}
	/* After the ranges are in: drain() waits for this to reach zero, then
	 * takes mu_ and finds them. */
	announced_.fetch_sub(1, std::memory_order_release);
	/* The announcement already moved the generation; bump again so that a
	 * consumer that loaded the generation after announce() but drained
	 * before it (wrong order, but cheap to forgive) still comes back. */
	if (!changed.empty()) {
		bump();
		wake();
	}
}

bool EventBuffer::drain(std::vector<Range> &out)
{
	std::lock_guard drain_lock(drain_mu_);
	/* Wait for announced batches. Bounded: an announcer publishes without
	 * blocking (a few microseconds after its read() returns). Nothing the
	 * announcer needs is held here: not mu_, and no caller's lock matters
	 * since the announcer takes none but mu_. */
	bool timed_out = false;
	if (announced_.load(std::memory_order_acquire) != 0) {
		const auto deadline = std::chrono::steady_clock::now() + kAnnounceWait;
		for (unsigned spin = 0; announced_.load(std::memory_order_acquire) != 0; ++spin) {
			if (std::chrono::steady_clock::now() >= deadline) {
				timed_out = true;
				break;
			}
			if (spin < 64)
				::sched_yield();
			else
				std::this_thread::sleep_for(std::chrono::microseconds(50));
		}
	}
	/* Clear the wake-up before taking the ranges: a producer that appends
	 * after this signals again (a spurious wake-up at worst, never a lost
	 * one). */
	if (const int fd = wake_fd_.load(std::memory_order_acquire); fd >= 0) {
		std::uint64_t count;
		[[maybe_unused]] const ssize_t n = ::read(fd, &count, sizeof count);
	}
	bool lost;
	{
		std::lock_guard lock(mu_);
		entries_.swap(spare_); /* no allocation: both keep their capacity */
		lost = lost_since_drain_ || timed_out;
		lost_since_drain_ = false;
		if (lost)
			++stats_.overflows;
	}
	/* Outside mu_: this may allocate, and free() may madvise()/munmap() heap
	 * memory that a source watches, which blocks until the userfaultfd
	 * monitor has read the event; the monitor then needs mu_. */
	try {
		out.insert(out.end(), spare_.begin(), spare_.end());
	} catch (...) {
		/* Could not hand the ranges over: "resync everything" loses none. */
		spare_.clear();
		if (!lost) {
			std::lock_guard lock(mu_);
			++stats_.overflows;
		}
		return true;
	}
	spare_.clear();
	return lost;
}

EventBuffer::Stats EventBuffer::stats() const noexcept
{
	std::lock_guard lock(mu_);
	return stats_;
}

} // namespace mrsync
