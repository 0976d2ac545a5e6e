/* SPDX-License-Identifier: MIT */
/* Mempool registration: explicit (mrsync_dpdk_register_mempool) and
 * automatic, from DPDK's mempool events (READY when a pool is fully
 * populated, DESTROY before its memory goes), as DPDK's mlx5 does.
 *
 * The events are an internal DPDK API (rte_mempool.h marks them
 * __rte_internal; drivers use them). DPDK calls them without any of its
 * locks held, in the process that populates or frees the pool, and only
 * there: registration is process-private. So attach also walks the pools
 * that exist (a secondary finds the primary's that way). */
#define ALLOW_INTERNAL_API 1 /* rte_mempool_event_callback_register */

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <string>
#include <vector>

#include <rte_errno.h>
#include <rte_mempool.h>

#include "dpdk_pvt.hpp"

using mrsync::Range;

namespace {

void chunk_cb(struct rte_mempool *, void *opaque, struct rte_mempool_memhdr *memhdr, unsigned)
{
	auto *chunks = static_cast<std::vector<Range> *>(opaque);
	const auto start = reinterpret_cast<std::uint64_t>(memhdr->addr);
	chunks->push_back({start, start + memhdr->len});
}

void on_mempool_event(enum rte_mempool_event event, struct rte_mempool *mp, void *arg)
{
	auto *md = static_cast<mrsync_dpdk *>(arg);
	if (event == RTE_MEMPOOL_EVENT_READY) {
		/* Nothing to return an error to: a pool we cannot register is
		 * still looked up, one buffer's pages at a time. */
		if (const int rc = md->add_pool(mp); rc < 0)
			MRSYNC_DPDK_LOG(WARNING, "pool '%s' not registered: %s\n", mp->name,
					mrsync_dpdk_last_error());
	} else if (event == RTE_MEMPOOL_EVENT_DESTROY) {
		md->remove_pool(mp);
	}
}

void collect_pool(struct rte_mempool *mp, void *arg)
{
	static_cast<std::vector<rte_mempool *> *>(arg)->push_back(mp);
}

} // namespace

int mrsync_dpdk::add_pool(struct rte_mempool *mp)
{
	std::vector<Range> found;
	rte_mempool_mem_iter(mp, chunk_cb, &found);
	if (found.empty())
		return mrsync_dpdk_fail(EINVAL, (std::string("mrsync_dpdk_register_mempool: pool '") +
						 mp->name + "' has no memory (populate it first)")
						.c_str());
	for (const Range &chunk : found)
		if (const int rc = hint(chunk); rc < 0)
			return mrsync_dpdk_fail_core(rc, "mrsync_dpdk_register_mempool");
	std::lock_guard lock(mu);
	for (const Range &chunk : found) {
		const bool known = std::any_of(chunks.begin(), chunks.end(), [&](const PoolChunk &c) {
			return c.range.start == chunk.start && c.range.end == chunk.end;
		});
		if (!known)
			chunks.push_back({chunk, mp});
	}
	std::sort(chunks.begin(), chunks.end(), [](const PoolChunk &a, const PoolChunk &b) {
		return a.range.start < b.range.start;
	});
	return int(found.size());
}

void mrsync_dpdk::remove_pool(const struct rte_mempool *mp)
{
	/* The registrations stay: the memory is still mapped until the EAL
	 * frees it, and that FREE event invalidates them. Only the chunk
	 * boundaries go, so no lookup asks for a chunk that no longer is one. */
	std::lock_guard lock(mu);
	chunks.erase(std::remove_if(chunks.begin(), chunks.end(),
				    [mp](const PoolChunk &c) { return c.pool == mp; }),
		     chunks.end());
}

bool mrsync_dpdk::adopt_foreign_pools()
{
	/* A miss in DPDK memory that no chunk holds is usually a buffer of
	 * rte_malloc, not a pool: the walk is throttled so such lookups do not
	 * pay it each time. */
	const auto now = std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
					       std::chrono::steady_clock::now().time_since_epoch())
					       .count());
	std::uint64_t due = next_pool_search_ns.load(std::memory_order_relaxed);
	if (now < due || !next_pool_search_ns.compare_exchange_strong(due, now + 10'000'000))
		return false;
	std::vector<rte_mempool *> pools;
	rte_mempool_walk(collect_pool, &pools); /* registers outside the walk's tailq lock */
	bool added = false;
	for (rte_mempool *mp : pools) {
		if (mp->populated_size != mp->size)
			continue;
		bool known;
		{
			std::lock_guard lock(mu);
			known = std::any_of(chunks.begin(), chunks.end(),
					    [mp](const PoolChunk &c) { return c.pool == mp; });
		}
		if (!known && add_pool(mp) > 0) {
			MRSYNC_DPDK_LOG(INFO, "pool '%s' (populated by another process) registered\n",
					mp->name);
			added = true;
		}
	}
	return added;
}

namespace mrsync::dpdk {

bool follow_mempools(mrsync_dpdk *md)
{
	/* Subscribe first, then walk: a pool populated in between is added
	 * twice, which add_pool() makes harmless; none is missed. */
	if (rte_mempool_event_callback_register(on_mempool_event, md) < 0 && rte_errno != EEXIST)
		return false;
	md->mempool_events = true;
	std::vector<rte_mempool *> pools;
	rte_mempool_walk(collect_pool, &pools); /* registers outside the walk's tailq lock */
	for (rte_mempool *mp : pools)
		if (mp->populated_size == mp->size)
			(void)md->add_pool(mp);
	return true;
}

void unfollow_mempools(mrsync_dpdk *md) noexcept
{
	if (std::exchange(md->mempool_events, false))
		rte_mempool_event_callback_unregister(on_mempool_event, md);
}

} // namespace mrsync::dpdk

extern "C" int mrsync_dpdk_register_mempool(struct mrsync_dpdk *md, struct rte_mempool *mp)
{
	if (!md || !mp)
		return mrsync_dpdk_fail(EINVAL, !md ? "mrsync_dpdk_register_mempool: md is NULL"
						    : "mrsync_dpdk_register_mempool: mp is NULL");
	return md->add_pool(mp);
}
