/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libmrsync_dpdk: the registration cache inside a DPDK EAL application.
 *
 * One mrsync_dpdk per process, attached after rte_eal_init(). It
 *  - registers the hugepage memory the EAL has (one registration per
 *    VA-contiguous run: the whole-area hint) and follows the EAL's memory
 *    events: a FREE (which DPDK reports *before* it unmaps) bumps the DPDK
 *    source's generation, so the next lookup resyncs and unpins the freed
 *    hugepages, which then really go back to the system;
 *  - catches changes of other memory (external buffers, plain malloc) through
 *    the kernel module or userfaultfd (params.extra_sources);
 *  - registers every mempool's memory chunks: the pools that exist at attach
 *    and, through DPDK's mempool READY/DESTROY events, those populated later
 *    in this process (mrsync_dpdk_register_mempool() does one explicitly);
 *  - works in a primary or a secondary process (docs/dpdk.md, "Multi-process");
 *  - gives every lcore a small private cache from buffer to key, checked
 *    against the sources' generations on every lookup: a hit reads lcore-local
 *    memory and the generation words, and writes nothing shared.
 *
 * Thread safety: attach/detach/register_mempool from the main lcore (or any
 * control thread); lookups on EAL threads, each with its own cache;
 * stats from anywhere.
 *
 * Errors: calls return 0 (or a count) or a negative errno, and calls that
 * return a pointer return NULL; either way mrsync_dpdk_last_error() gives a
 * message naming the argument (a failed core call's message included).
 * Neither errno nor rte_errno is set.
 *
 * Struct sizes follow mrsync.h ("Structs and their sizes"): params and stats
 * from an older or newer header are accepted. ABI: libmrsync_dpdk.so.0,
 * symbols versioned MRSYNC_DPDK_0.x.
 */
#ifndef MRSYNC_DPDK_H
#define MRSYNC_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include <rte_branch_prediction.h>
#include <rte_common.h>
#include <rte_mbuf.h>

#include <mrsync/generation.h>
#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

struct rte_mempool;
struct mrsync_dpdk;

struct mrsync_dpdk_params {
	uint32_t struct_size;     /**< sizeof(struct mrsync_dpdk_params), see mrsync.h */
	uint32_t extra_sources;   /**< MRSYNC_SOURCE_* for memory the EAL does not own (external
				       buffers); 0 = the kernel module when /dev/mrsync exists, else
				       userfaultfd */
	const char *driver;       /**< "uring" (default), "null" (lookups only), "verbs", ... */
	const void *driver_arg;   /**< mrsync_params.driver_arg */
	uint32_t ctx_flags;       /**< mrsync_params.flags (MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK) */
	uint32_t access;          /**< MRSYNC_ACCESS_* every registration grants; 0 = all */
	uint32_t max_regions;     /**< mrsync_params.max_regions; 0 = default */
	uint32_t flags;           /**< MRSYNC_DPDK_F_* (0.1: `reserved`, had to be 0) */
};

/** Do not follow mempool events: pools are registered only by
 *  mrsync_dpdk_register_mempool() (lookups of other mbufs still work, a
 *  registration per buffer's pages instead of one per pool chunk). */
#define MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS (1u << 0)
/** Tests only: do not look for pools another process populated after
 *  attach when a lookup misses in DPDK memory outside every known pool (the
 *  negative control of that search). */
#define MRSYNC_DPDK_F_TEST_NO_POOL_SEARCH (1u << 1)

#define MRSYNC_DPDK_PARAMS_INIT {.struct_size = sizeof(struct mrsync_dpdk_params)}

/** What a lookup hands out: the registration covering the buffer. */
struct mrsync_dpdk_key {
	uint64_t addr;    /**< start of the registered area */
	uint64_t length;  /**< its length */
	uint32_t lkey;
	uint32_t rkey;
};

/** Entries of one lcore's cache: pool chunks and external buffers in use. */
#define MRSYNC_DPDK_LCORE_ENTRIES 8
#define MRSYNC_DPDK_MAX_GEN_WORDS 4

struct mrsync_dpdk_lcore_entry {
	uint64_t start;              /**< cached buffer range [start, start + len) */
	uint64_t len;
	struct mrsync_dpdk_key key;
	struct mrsync_reg reg;       /**< the hold this entry keeps */
};

/**
 * One lcore's cache. Public only so the hit path below can be inlined;
 * written by its lcore alone, never by another thread (stats read it racily).
 */
struct mrsync_dpdk_lcore {
	uint64_t generation;                   /**< sum of the words when filled */
	uint32_t nwords;                       /**< 0 when generation checks are off */
	uint32_t n;                            /**< valid entries */
	const uint64_t *words[MRSYNC_DPDK_MAX_GEN_WORDS];
	uint64_t lookups;
	uint64_t misses;                       /**< lookups that took the slow path */
	uint64_t flushes;
	uint32_t next_victim;
	uint32_t lcore_id;
	struct mrsync_dpdk *md;
	struct mrsync_dpdk_lcore_entry entries[MRSYNC_DPDK_LCORE_ENTRIES]; /**< n in use */
} __rte_cache_aligned;

/**
 * Attaches to the running EAL (primary or secondary process): creates the
 * cache, registers the hugepage memory and the mempools, subscribes to
 * memory and mempool events and telemetry (/mrsync/stats, /mrsync/regions).
 * @return 0; -EINVAL (a parameter, named in mrsync_dpdk_last_error()), -EEXIST
 *         (already attached), -ENODEV (driver or source unavailable), or the
 *         errors of mrsync_ctx_create() and mrsync_hint().
 */
int mrsync_dpdk_attach(const struct mrsync_dpdk_params *params, struct mrsync_dpdk **out);

/** Puts every lcore's holds, unsubscribes, destroys the cache; sets *md to
 *  NULL. No lookup may be running. */
void mrsync_dpdk_detach(struct mrsync_dpdk **md);

/** The underlying cache (for mrsync_get() and friends, and driver_of()). */
struct mrsync_ctx *mrsync_dpdk_ctx(struct mrsync_dpdk *md);

/** 1 when the EAL gives no memory events (--legacy-mem, --no-huge): its
 *  memory is registered once and never changes; 0 otherwise. */
int mrsync_dpdk_memory_is_static(const struct mrsync_dpdk *md);

/**
 * Registers every memory chunk of a mempool (one registration each, or the
 * hugepage run that holds it), so lookups of its mbufs hit. Optional since
 * 0.2: attach registers the pools that exist and follows the ones populated
 * later in this process. Calling it for a pool already registered (by an
 * event or an earlier call) registers nothing twice and returns the same
 * count. A pool another process populated after attach (DPDK delivers
 * mempool events only where the pool is populated) is found by the first
 * lookup that misses in DPDK memory outside every known pool (the pools are
 * walked again then, at most every 10 ms); call this to have it registered
 * before that lookup. Needed with MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS.
 * Thread safety: any control thread; not from a mempool event callback.
 * @return the number of chunks, or -EINVAL / the errors of mrsync_hint().
 */
int mrsync_dpdk_register_mempool(struct mrsync_dpdk *md, struct rte_mempool *mp);

/**
 * The calling EAL thread's cache.
 * @return it, or NULL (md NULL, or a thread that is not an EAL thread:
 *         register it with rte_thread_register() first), with the reason in
 *         mrsync_dpdk_last_error().
 */
struct mrsync_dpdk_lcore *mrsync_dpdk_lcore_cache(struct mrsync_dpdk *md);

/** The miss path of the lookups below (not inline). */
int mrsync_dpdk_lookup_slow(struct mrsync_dpdk_lcore *c, const void *addr, size_t len,
			    struct mrsync_dpdk_key *out);

/** Drops every entry of the cache (puts its holds), e.g. before an lcore idles. */
void mrsync_dpdk_lcore_flush(struct mrsync_dpdk_lcore *c);

/**
 * The key for [addr, addr + len) on this lcore.
 *
 * The rule (mrsync_generation()): the cache was filled under generation g;
 * while the sources still add up to g, nothing it holds changed. Once they
 * moved, the whole cache is dropped and refilled through mrsync_get(), which
 * resyncs first. A key handed out stays usable for DMA that the lcore posts
 * and completes before its next lookup (its registration is held until the
 * cache drops it).
 * @return 0, or the errors of mrsync_get().
 */
static inline int mrsync_dpdk_lookup(struct mrsync_dpdk_lcore *c, const void *addr, size_t len,
				     struct mrsync_dpdk_key *out)
{
	const uint64_t g = mrsync_gen_begin(c->words, c->nwords);
	c->lookups++;
	if (likely(g == c->generation)) {
		const uint64_t a = (uint64_t)(uintptr_t)addr;
		for (uint32_t i = 0; i < c->n; ++i) {
			const struct mrsync_dpdk_lcore_entry *e = &c->entries[i];
			if (a - e->start < e->len && len <= e->len - (a - e->start)) {
				*out = e->key;
				return 0;
			}
		}
	}
	return mrsync_dpdk_lookup_slow(c, addr, len, out);
}

/** The key for an mbuf's data buffer (direct, or an attached external buffer). */
static inline int mrsync_dpdk_mbuf_key(struct mrsync_dpdk_lcore *c, const struct rte_mbuf *m,
				       struct mrsync_dpdk_key *out)
{
	return mrsync_dpdk_lookup(c, m->buf_addr, m->buf_len, out);
}

/**
 * The lkeys of a burst of mbufs: one generation check for the whole burst,
 * then a range check per mbuf against the entry the previous one hit, which
 * is the pool's chunk for almost every packet. Same rule as
 * mrsync_dpdk_lookup(): the keys are current for DMA the lcore posts and
 * completes before its next lookup.
 * @return 0 when every mbuf got its key; else the first error (-errno) and
 *         lkeys[i] = 0 for the mbufs that did not.
 */
static inline int mrsync_dpdk_mbuf_lkeys(struct mrsync_dpdk_lcore *c, struct rte_mbuf *const *pkts,
					 uint16_t n, uint32_t *lkeys)
{
	int rc = 0;
again:;
	const uint64_t g = mrsync_gen_begin(c->words, c->nwords);
	const uint64_t flushes = c->flushes;
	const int current = g == c->generation;
	/* The entry the previous mbuf hit, in registers: the stores to lkeys[]
	 * could alias the cache, so the compiler would reload it otherwise. */
	uint64_t lo = 1, hi = 0;
	uint32_t lkey = 0;
	if (likely(current && c->n)) {
		lo = c->entries[0].start;
		hi = lo + c->entries[0].len;
		lkey = c->entries[0].key.lkey;
	}
	for (uint16_t k = 0; k < n; ++k) {
		const uint64_t a = (uint64_t)(uintptr_t)pkts[k]->buf_addr;
		const uint64_t end = a + pkts[k]->buf_len;
		if (likely(a >= lo && end <= hi)) {
			lkeys[k] = lkey;
			continue;
		}
		uint32_t i = 0;
		if (likely(current))
			for (; i < c->n; ++i)
				if (a >= c->entries[i].start && end <= c->entries[i].start + c->entries[i].len)
					break;
		if (likely(current && i < c->n)) {
			lo = c->entries[i].start;
			hi = lo + c->entries[i].len;
			lkey = lkeys[k] = c->entries[i].key.lkey;
			continue;
		}
		struct mrsync_dpdk_key key;
		const int r = mrsync_dpdk_lookup_slow(c, (const void *)(uintptr_t)a, end - a, &key);
		if (unlikely(c->flushes != flushes))
			goto again; /* the cache was dropped: keys taken above may be gone */
		lkeys[k] = r < 0 ? 0 : key.lkey;
		if (r < 0 && !rc)
			rc = r;
	}
	c->lookups += n;
	return rc;
}

struct mrsync_dpdk_stats {
	uint64_t lookups;           /**< all lcores */
	uint64_t lcore_hits;        /**< served by an lcore cache */
	uint64_t lcore_misses;
	uint64_t lcore_flushes;     /**< caches dropped because a generation moved */
	uint64_t mem_alloc_events;  /**< EAL ALLOC events seen */
	uint64_t mem_free_events;   /**< EAL FREE events seen */
	uint64_t freed_bytes;       /**< bytes the FREE events covered */
	uint64_t hinted_runs;       /**< hugepage runs / pool chunks registered */
	uint64_t memory_static;     /**< 1: the EAL gives no memory events */
	/* 0.1 had `struct mrsync_stats core` here: one struct cannot grow at
	 * two places. The cache's own counters: mrsync_get_stats() on
	 * mrsync_dpdk_ctx(md). */
};

/** The message of this thread's last failed mrsync_dpdk_* call, naming the
 *  argument (core failures included); "" if none. */
const char *mrsync_dpdk_last_error(void);

/**
 * Copies the DPDK layer's counters into out_size bytes of *out (as
 * mrsync_get_stats()). The cache's own: mrsync_get_stats(mrsync_dpdk_ctx(md)).
 * Any thread; lcore counters are read without a lock.
 * @return 0 or -EINVAL (md or out NULL, out_size below 8).
 */
int mrsync_dpdk_get_stats(struct mrsync_dpdk *md, struct mrsync_dpdk_stats *out,
			  size_t out_size);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
