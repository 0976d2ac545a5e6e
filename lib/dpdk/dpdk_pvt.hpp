/* SPDX-License-Identifier: MIT */
/* Private to libmrsync_dpdk: the attach object, the DPDK event source and
 * the log type. */
#ifndef MRSYNC_DPDK_PVT_HPP
#define MRSYNC_DPDK_PVT_HPP

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <rte_lcore.h>
#include <rte_log.h>

#include <mrsync/mrsync_dpdk.h>
#include <mrsync/source.hpp>

namespace mrsync::dpdk {

extern int logtype;

#define MRSYNC_DPDK_LOG(level, ...)                                                    \
	rte_log(RTE_LOG_##level, ::mrsync::dpdk::logtype, "MRSYNC: " __VA_ARGS__)

/* EAL memory events, counted where they arrive (inside the hotplug lock). */
struct EventCounters {
	std::atomic<std::uint64_t> allocs{0}, frees{0}, freed_bytes{0};
};

/* The DPDK memory-event side, process-wide: the EAL has one callback list,
 * so one subscription feeds every live DPDK source. */
class MemEvents {
public:
	/* Subscribes to the EAL's memory events. @return false when the EAL
	 * gives none (--legacy-mem, --no-huge): memory is static. */
	static bool subscribe();
	static void unsubscribe() noexcept;

	/* Ranges allocated since the last call (hinted later, outside the
	 * hotplug lock); `overflowed` says some were not kept. */
	static void take_allocs(std::vector<Range> &out, bool &overflowed);
	static EventCounters &counters() noexcept;
};

/* Called by attach so the core's MRSYNC_SOURCE_DPDK factory knows the EAL
 * is ready (the source needs nothing else). */
void set_eal_attached(bool attached) noexcept;

/* Mempools (mempools.cpp): registers the pools that exist now and
 * subscribes to READY/DESTROY so pools populated later are registered too
 * (the way DPDK's mlx5 does). DPDK calls the callback only in the process
 * that populates or frees the pool: a secondary learns the primary's pools
 * from the walk at attach. @return false if the subscription failed. */
bool follow_mempools(mrsync_dpdk *md);
void unfollow_mempools(mrsync_dpdk *md) noexcept;

} // namespace mrsync::dpdk

/* The error channel (mrsync_dpdk.h, "Errors"): keeps the message for
 * mrsync_dpdk_last_error() and returns -code. */
int mrsync_dpdk_fail(int code, const char *message) noexcept;
/* Records a failed core call (rc < 0) for mrsync_dpdk_last_error(); returns rc. */
int mrsync_dpdk_fail_core(int rc, const char *what) noexcept;

/* The attach object; C name because the C header forward-declares it. */
struct mrsync_dpdk {
	mrsync_ctx *ctx = nullptr;
	std::uint32_t access = MRSYNC_ACCESS_ALL;
	bool memory_static = false;
	bool check_generations = true;
	std::uint32_t nwords = 0;
	const std::uint64_t *words[MRSYNC_DPDK_MAX_GEN_WORDS] = {};

	/* Control side: pool chunks and hinted runs (lookups choose what to
	 * cache from these), under `mu`. */
	struct PoolChunk {
		mrsync::Range range;
		const struct rte_mempool *pool;
	};
	std::mutex mu;
	std::vector<PoolChunk> chunks; /* sorted by start */
	std::atomic<std::uint64_t> hinted_runs{0};
	bool mempool_events = false; /* subscribed to READY/DESTROY */
	bool search_pools = true;    /* on a miss in DPDK memory: walk the pools again */
	std::atomic<std::uint64_t> next_pool_search_ns{0}; /* no walk before (steady clock) */

	std::unique_ptr<mrsync_dpdk_lcore[]> lcores; /* RTE_MAX_LCORE of them */

	/* Hints the ALLOC ranges the EAL reported since the last call. */
	void hint_new_memory();
	/* The range an lcore should cache for a buffer at [addr, addr + len). */
	mrsync::Range cache_range(std::uint64_t addr, std::uint64_t len);
	int hint(mrsync::Range run);
	/* Registers a populated pool's chunks and remembers them (once, however
	 * often it is called). @return the number of chunks or -errno. */
	int add_pool(struct rte_mempool *mp);
	/* Registers the populated pools no chunk knows yet -- those another
	 * process populated after attach, which sent no event here -- at most
	 * once per 10 ms. @return whether one was added. */
	bool adopt_foreign_pools();
	/* Forgets a pool's chunks (its memory's FREE events do the rest). */
	void remove_pool(const struct rte_mempool *mp);
};

#endif
