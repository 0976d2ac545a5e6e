/* SPDX-License-Identifier: MIT */
/* mrsync_dpdk_attach/detach, the hugepage memory at attach, stats (mempools:
 * mempools.cpp). */
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstddef>
#include <cerrno>
#include <new>
#include <string>
#include <vector>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_memory.h>

#include "dpdk_pvt.hpp"
#include "sized.hpp" /* lib/core: the struct_size rule */
#include "telemetry.hpp"

using mrsync::Range;
namespace dpdk = mrsync::dpdk;

namespace {

mrsync_dpdk *attached = nullptr; /* one per process: the EAL is one per process */

thread_local std::string last_error;

/* Keeps the message for mrsync_dpdk_last_error() and logs it. */
int fail(int code, const std::string &message)
{
	last_error = message;
	MRSYNC_DPDK_LOG(ERR, "%s\n", message.c_str());
	return -code;
}

/* A core call failed: its message becomes ours. */
int fail_core(int rc, const char *what)
{
	return fail(-rc, std::string(what) + ": " + mrsync_last_error());
}

int walk_contig(const struct rte_memseg_list *msl, const struct rte_memseg *ms, size_t len,
		void *arg)
{
	if (msl->external) /* rte_extmem: the application registers it itself */
		return 0;
	auto *runs = static_cast<std::vector<Range> *>(arg);
	const auto start = reinterpret_cast<std::uint64_t>(ms->addr);
	runs->push_back({start, start + len});
	return 0;
}

/* Bytes the EAL will never free (--socket-mem preallocation). */
int walk_static(const struct rte_memseg_list *msl, const struct rte_memseg *ms, void *arg)
{
	if (!msl->external && (ms->flags & RTE_MEMSEG_FLAG_DO_NOT_FREE))
		*static_cast<std::uint64_t *>(arg) += ms->len;
	return 0;
}

std::uint32_t automatic_extra_sources()
{
	return access("/dev/mrsync", R_OK | W_OK) == 0 ? MRSYNC_SOURCE_KMOD : MRSYNC_SOURCE_UFFD;
}

/* While attached, the core's log lines go to rte_log under our log type: a
 * DPDK application has one log, with its streams and levels
 * (--log-level=lib.mrsync:debug; MRSYNC_LOG filters first). The sink in
 * place before is kept for detach. */
struct LogRouting {
	mrsync_log_fn fn = nullptr;
	void *arg = nullptr;
} saved_sink;

void to_rte_log(int level, const char *component, const char *message, void *)
{
	static const std::uint32_t rte_levels[] = {RTE_LOG_ERR, RTE_LOG_WARNING, RTE_LOG_INFO,
						   RTE_LOG_DEBUG};
	const std::uint32_t rte_level =
		level >= 0 && level < 4 ? rte_levels[level] : std::uint32_t(RTE_LOG_DEBUG);
	rte_log(rte_level, dpdk::logtype, "MRSYNC: %s: %s\n", component, message);
}

void route_log_to_rte()
{
	mrsync_get_log_sink(&saved_sink.fn, &saved_sink.arg);
	mrsync_set_log_sink(to_rte_log, nullptr);
}

void restore_log()
{
	mrsync_set_log_sink(saved_sink.fn, saved_sink.arg);
	saved_sink = {};
}

} // namespace

int mrsync_dpdk::hint(Range run)
{
	const int rc = mrsync_hint(ctx, reinterpret_cast<const void *>(run.start),
				   run.end - run.start, access);
	if (rc == 0)
		hinted_runs.fetch_add(1, std::memory_order_relaxed);
	else if (rc == -EFAULT) /* freed again before the hint: nothing to register */
		MRSYNC_DPDK_LOG(DEBUG, "[0x%" PRIx64 ", 0x%" PRIx64 ") went away before its hint: %s\n",
				run.start, run.end, mrsync_last_error());
	else
		MRSYNC_DPDK_LOG(WARNING, "cannot register [0x%" PRIx64 ", 0x%" PRIx64 "): %s\n",
				run.start, run.end, mrsync_last_error());
	return rc;
}

void mrsync_dpdk::hint_new_memory()
{
	std::vector<Range> runs;
	bool overflowed = false;
	dpdk::MemEvents::take_allocs(runs, overflowed);
	if (overflowed) { /* too many to queue: look at the memsegs again */
		runs.clear();
		rte_memseg_contig_walk(walk_contig, &runs);
	}
	for (const Range &run : runs)
		(void)hint(run);
}

Range mrsync_dpdk::cache_range(std::uint64_t addr, std::uint64_t len)
{
	auto chunk_of = [&]() -> Range {
		std::lock_guard lock(mu);
		auto it = std::upper_bound(chunks.begin(), chunks.end(), addr,
					   [](std::uint64_t a, const PoolChunk &c) {
						   return a < c.range.start;
					   });
		if (it != chunks.begin() && addr + len <= std::prev(it)->range.end)
			return std::prev(it)->range;
		return {};
	};
	if (const Range chunk = chunk_of(); chunk.end)
		return chunk;
	/* In DPDK memory but in no known pool: perhaps a pool another process
	 * populated after attach (no event reached us); look once more. */
	if (mempool_events && search_pools &&
	    rte_mem_virt2memseg_list(reinterpret_cast<const void *>(addr)) && adopt_foreign_pools())
		if (const Range chunk = chunk_of(); chunk.end)
			return chunk;
	/* An external buffer: its whole pages (mapped, since the buffer is). */
	const std::uint64_t page = 4096;
	return {addr & ~(page - 1), (addr + len + page - 1) & ~(page - 1)};
}

extern "C" {

int mrsync_dpdk_attach(const struct mrsync_dpdk_params *caller, struct mrsync_dpdk **out)
{
	if (!out)
		return fail(EINVAL, "mrsync_dpdk_attach: out is NULL");
	*out = nullptr;
	mrsync_dpdk_params given = MRSYNC_DPDK_PARAMS_INIT;
	if (caller) {
		if (const char *why = mrsync::detail::copy_in(
			    caller, caller->struct_size, offsetof(mrsync_dpdk_params, driver), given))
			return fail(EINVAL, "mrsync_dpdk_attach: params->struct_size is " +
						    std::to_string(caller->struct_size) + ": " + why +
						    " (initialise with MRSYNC_DPDK_PARAMS_INIT)");
		given.struct_size = sizeof given;
	}
	const mrsync_dpdk_params *p = &given;
	constexpr std::uint32_t known_flags =
		MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS | MRSYNC_DPDK_F_TEST_NO_POOL_SEARCH;
	if (p->flags & ~known_flags)
		return fail(EINVAL, "mrsync_dpdk_attach: params->flags has unknown bits " +
					    std::to_string(p->flags & ~known_flags));
	if (p->extra_sources & MRSYNC_SOURCE_DPDK)
		return fail(EINVAL, "mrsync_dpdk_attach: params->extra_sources must not name "
				    "MRSYNC_SOURCE_DPDK (it is always on)");
	/* A secondary works as the primary does: the EAL delivers it memory
	 * events for the primary's changes too (during the IPC sync, before the
	 * secondary unmaps), and the hotplug lock prepare_pin() waits on is the
	 * shared one (docs/dpdk.md, "Multi-process"). */
	if (rte_lcore_count() == 0)
		return fail(ENODEV, "mrsync_dpdk_attach: call it after rte_eal_init()");
	if (attached)
		return fail(EEXIST, "mrsync_dpdk_attach: already attached in this process");

	std::unique_ptr<mrsync_dpdk> md;
	try {
		md = std::make_unique<mrsync_dpdk>();
		md->lcores = std::make_unique<mrsync_dpdk_lcore[]>(RTE_MAX_LCORE);
	} catch (const std::bad_alloc &) {
		return fail(ENOMEM, "mrsync_dpdk_attach: out of memory");
	}
	md->access = p->access ? p->access : MRSYNC_ACCESS_ALL;
	md->memory_static = !dpdk::MemEvents::subscribe();

	dpdk::set_eal_attached(true);
	route_log_to_rte(); /* before the context: its creation may log */
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_DPDK |
			 (p->extra_sources ? p->extra_sources : automatic_extra_sources());
	params.driver = p->driver;
	params.driver_arg = p->driver_arg;
	params.flags = p->ctx_flags;
	params.max_regions = p->max_regions;
	/* A FREE inside a larger backing leaves the freed hugepage pinned
	 * until compaction: compact as soon as one 2 MiB page is stale, so
	 * freed hugepages go back to the system at the resync. */
	params.compact_threshold = 2u << 20;
	if (int rc = mrsync_ctx_create(&params, &md->ctx); rc < 0) {
		dpdk::set_eal_attached(false);
		if (!md->memory_static)
			dpdk::MemEvents::unsubscribe();
		restore_log();
		return fail_core(rc, "mrsync_dpdk_attach");
	}
	md->check_generations = !(p->ctx_flags & MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	md->search_pools = !(p->flags & MRSYNC_DPDK_F_TEST_NO_POOL_SEARCH);
	if (md->check_generations) {
		const int n = mrsync_generation_words(md->ctx, md->words, MRSYNC_DPDK_MAX_GEN_WORDS);
		md->nwords = n > 0 ? std::uint32_t(n) : 0;
	}
	for (unsigned i = 0; i < RTE_MAX_LCORE; ++i) {
		mrsync_dpdk_lcore &c = md->lcores[i];
		c.md = md.get();
		c.lcore_id = i;
		c.nwords = md->nwords;
		std::copy_n(md->words, md->nwords, c.words);
	}

	if (md->memory_static)
		MRSYNC_DPDK_LOG(NOTICE, "memory is static (legacy memory or no hugepages: the EAL "
					"gives no memory events); registered once; external buffers "
					"are still followed by the other sources\n");
	std::uint64_t preallocated = 0;
	if (!md->memory_static && rte_memseg_walk(walk_static, &preallocated) == 0 && preallocated)
		MRSYNC_DPDK_LOG(NOTICE, "%" PRIu64 " MiB preallocated (--socket-mem) is static: the "
					"EAL never frees it; memory beyond it follows memory events\n",
				preallocated >> 20);
	std::vector<Range> runs;
	rte_memseg_contig_walk(walk_contig, &runs); /* outside any callback: may lock */
	std::vector<Range> ignored; /* allocations before the walk are in it */
	bool overflowed;
	dpdk::MemEvents::take_allocs(ignored, overflowed);
	for (const Range &run : runs)
		(void)md->hint(run);
	MRSYNC_DPDK_LOG(INFO, "attached (%s process): driver %s, %zu hugepage run(s) registered\n",
			rte_eal_process_type() == RTE_PROC_PRIMARY ? "primary" : "secondary",
			mrsync_driver_name(md->ctx), runs.size());
	if (!(p->flags & MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS) && !dpdk::follow_mempools(md.get()))
		MRSYNC_DPDK_LOG(WARNING, "mempool events unavailable: register pools with "
					 "mrsync_dpdk_register_mempool()\n");
	mrsync::dpdk::telemetry_attach(md.get());
	attached = md.get();
	*out = md.release();
	return 0;
}

void mrsync_dpdk_detach(struct mrsync_dpdk **pmd)
{
	if (!pmd || !*pmd)
		return;
	mrsync_dpdk *md = *pmd;
	mrsync::dpdk::telemetry_detach();
	dpdk::unfollow_mempools(md);
	for (unsigned i = 0; i < RTE_MAX_LCORE; ++i)
		mrsync_dpdk_lcore_flush(&md->lcores[i]);
	if (!md->memory_static)
		dpdk::MemEvents::unsubscribe();
	mrsync_ctx_destroy(&md->ctx);
	restore_log(); /* after the context: its teardown may log */
	dpdk::set_eal_attached(false);
	attached = nullptr;
	delete md;
	*pmd = nullptr;
}

struct mrsync_ctx *mrsync_dpdk_ctx(struct mrsync_dpdk *md)
{
	return md ? md->ctx : nullptr;
}

int mrsync_dpdk_memory_is_static(const struct mrsync_dpdk *md)
{
	return md && md->memory_static ? 1 : 0;
}

int mrsync_dpdk_get_stats(struct mrsync_dpdk *md, struct mrsync_dpdk_stats *caller,
			  size_t out_size)
{
	if (!md || !caller || out_size < sizeof(std::uint64_t))
		return fail(EINVAL, !md ? "mrsync_dpdk_get_stats: md is NULL"
				    : !caller ? "mrsync_dpdk_get_stats: out is NULL"
					      : "mrsync_dpdk_get_stats: out_size is below 8: pass "
						"sizeof(struct mrsync_dpdk_stats)");
	mrsync_dpdk_stats s{};
	mrsync_dpdk_stats *out = &s;
	for (unsigned i = 0; i < RTE_MAX_LCORE; ++i) {
		/* racy reads of lcore-private counters: monotonic, good enough */
		const mrsync_dpdk_lcore &c = md->lcores[i];
		const std::uint64_t lookups = __atomic_load_n(&c.lookups, __ATOMIC_RELAXED);
		const std::uint64_t misses = __atomic_load_n(&c.misses, __ATOMIC_RELAXED);
		out->lookups += lookups;
		out->lcore_hits += lookups - std::min(lookups, misses);
		out->lcore_misses += misses;
		out->lcore_flushes += __atomic_load_n(&c.flushes, __ATOMIC_RELAXED);
	}
	const auto &ev = dpdk::MemEvents::counters();
	out->mem_alloc_events = ev.allocs.load(std::memory_order_relaxed);
	out->mem_free_events = ev.frees.load(std::memory_order_relaxed);
	out->freed_bytes = ev.freed_bytes.load(std::memory_order_relaxed);
	out->hinted_runs = md->hinted_runs.load(std::memory_order_relaxed);
	out->memory_static = md->memory_static;
	mrsync::detail::copy_out(s, caller, out_size);
	return 0;
}

const char *mrsync_dpdk_last_error(void)
{
	return last_error.c_str();
}

} // extern "C"

int mrsync_dpdk_fail(int code, const char *message) noexcept
{
	try {
		return fail(code, message);
	} catch (const std::bad_alloc &) {
		last_error.clear(); /* the code still says what failed */
		return -code;
	}
}

int mrsync_dpdk_fail_core(int rc, const char *what) noexcept
{
	try {
		return fail_core(rc, what);
	} catch (const std::bad_alloc &) {
		last_error.clear();
		return rc;
	}
}
