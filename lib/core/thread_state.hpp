/* SPDX-License-Identifier: MIT */
/* Private. Per-thread state of a context: the thread's hold counters (one per
 * region slot) and hit counter. Only the owning thread writes them, with
 * plain (relaxed) stores, so a hit never writes a line another thread writes;
 * the slow path sums them across threads when it needs to know whether a
 * region is in use.
 *
 * Why not liburcu: the hit path already needs per-thread hold counters (a
 * shared reference count is exactly what makes UCX's rcache collapse with two
 * threads), and a hold taken speculatively then validated against the page
 * table, with membarrier() on the reclaim side, gives the grace period for
 * free. liburcu's reader state lives in its own shared object's TLS, which
 * costs a __tls_get_addr call per lookup from our shared library. */
#ifndef MRSYNC_THREAD_STATE_HPP
#define MRSYNC_THREAD_STATE_HPP

#include <atomic>
#include <cstdint>
#include <memory>

#include <mrsync/result.hpp>

namespace mrsync::detail {

struct alignas(64) ThreadState {
	explicit ThreadState(std::uint32_t slots)
		: holds(std::make_unique<std::atomic<std::int64_t>[]>(slots))
	{
	}

	/* Holds taken minus released by this thread, per region slot. A put
	 * from another thread makes that thread's counter negative: only the
	 * sum over threads means anything. */
	std::unique_ptr<std::atomic<std::int64_t>[]> holds;
	std::atomic<std::uint64_t> hits{0};

	/* Owner-only increment: a relaxed load and store, not a locked RMW. */
	static void bump(std::atomic<std::int64_t> &c, std::int64_t by) noexcept
	{
		c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
	}
	static void bump(std::atomic<std::uint64_t> &c) noexcept
	{
		c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
	}
};

/* The calling thread's state for the context it used last, cached in a
 * thread-local (initial-exec: no __tls_get_addr on the hit path). Contexts
 * are named by a process-unique id, never reused, so a stale entry never
 * matches a new context that happens to get the same address. */
struct TlsSlot {
	std::uint64_t ctx_id;
	ThreadState *state;
};
inline constexpr int kTlsSlots = 4;
extern __thread TlsSlot tls_slots[kTlsSlots] __attribute__((tls_model("initial-exec")));

/** Makes later synchronize_readers() calls cheap (registers the process
 *  for expedited membarrier). */
Status init_reader_sync();

/** Returns once every thread has executed a full memory barrier after the
 *  call started: a hold taken before it is visible, and a reader that
 *  validates after it sees every page-table store made before it. */
void synchronize_readers() noexcept;

} // namespace mrsync::detail

#endif
