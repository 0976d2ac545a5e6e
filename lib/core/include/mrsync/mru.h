/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The inline hit path for a thread that reuses its own buffers (the shape of
 * DPDK mlx5's per-queue MR cache): the registration this thread got last is
 * kept in a thread-local entry, and mrsync_get_mru() checks it in the
 * caller's code before calling into libmrsync -- no call, no lock, no
 * atomic read-modify-write. Anything else (another buffer, another context,
 * a change anywhere) goes to the library (mrsync_get_mru_slow(): mrsync_get()
 * that refills the entry).
 *
 * Why a kept entry is current (the generation rule, docs/design.md): it is
 * used only while
 *  - the sum of the sources' generation words still equals the value under
 *    which it was filled: no change was reported since, not even one still
 *    waiting for a resync;
 *  - the context's epoch has not moved: every resync, device map,
 *    eviction, compaction and fork moves it (under the context lock) before
 *    a replaced translation is released or a registration is freed;
 *  - and the context is the one it was filled for (ids are never reused).
 * The hold taken here is the hit path's speculative hold: the thread's own
 * counter for that registration, then the epoch is read again; a reclaimer
 * moves the epoch, waits for every thread (membarrier) and only then sums the
 * holds, so either it sees this hold or this thread sees the new epoch.
 *
 * The entry is this library's (one per thread, exported as mrsync_mru_tls);
 * the structs below are part of the ABI: new fields only ever at the end.
 * Lookups served here count in stats.hits; they do not set the region's
 * clock bit (the fill did), so a registration used only through this entry
 * can be evicted under pressure -- the next mrsync_get() then registers it
 * again.
 */
#ifndef MRSYNC_MRU_H
#define MRSYNC_MRU_H

#include <stddef.h>
#include <stdint.h>

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/** The first bytes of every struct mrsync_ctx (read-only for callers). */
struct mrsync_ctx_hot {
	uint64_t id;              /**< the context's id, never reused (never 0) */
	uint64_t epoch;           /**< moves whenever a kept entry may be stale */
	const uint64_t *words[4]; /**< the generation words the hit path checks */
	uint32_t nwords;          /**< how many (0: generation checks off) */
	uint32_t reserved;
	uint64_t zero;            /**< always 0: stands in for a missing word */
};

/** A thread's most recently used registration (filled by mrsync_get()). */
struct mrsync_mru {
	uint64_t ctx_id;  /**< 0: empty */
	uint64_t epoch;   /**< mrsync_ctx_hot.epoch when filled */
	uint64_t gen;     /**< mrsync_gen_begin() of the words when filled */
	uint64_t start;   /**< requests inside [start, end) ... */
	uint64_t end;
	uint32_t access;  /**< ... asking at most these rights are served */
	uint32_t reserved;
	struct mrsync_reg reg;  /**< what mrsync_get() returned */
	int64_t *hold;    /**< this thread's hold counter for reg.region */
	uint64_t *hits;   /**< this thread's hit counter */
	/** The generation words (a context with more than two is never kept);
	 *  a missing one points at mrsync_ctx_hot.zero. */
	const uint64_t *words[2];
};

/** The calling thread's entry. Initial-exec TLS: no __tls_get_addr. */
extern __thread struct mrsync_mru mrsync_mru_tls __attribute__((tls_model("initial-exec")));

/** mrsync_get() that also keeps what it returns as the thread's entry
 *  (mrsync_get() itself keeps only what its slow path found, so that its
 *  random-lookup hit path pays nothing for the entry). Same arguments,
 *  results and errors. Thread safety: as mrsync_get(). */
int mrsync_get_mru_slow(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access,
			struct mrsync_reg *out);

#pragma GCC visibility pop

/** Owner-only counter update, as the library's hit path does it: a relaxed
 *  load and store, read by the slow path of other threads. */
static inline void mrsync_mru_add_(int64_t *counter, int64_t by)
{
	__atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + by,
			 __ATOMIC_RELAXED);
}

/**
 * mrsync_get(), served inline when this thread's last registration of `ctx`
 * covers the request and nothing changed since; else mrsync_get() itself.
 * Same arguments, results and errors as mrsync_get(); pair with
 * mrsync_put_mru() or mrsync_put().
 * Thread safety: as mrsync_get().
 */
static inline int mrsync_get_mru(struct mrsync_ctx *ctx, const void *addr, size_t len,
				 uint32_t access, struct mrsync_reg *out)
{
	struct mrsync_mru *m = &mrsync_mru_tls;
	const struct mrsync_ctx_hot *h = (const struct mrsync_ctx_hot *)ctx;
	const uint64_t a = (uint64_t)(uintptr_t)addr;
	if (__builtin_expect(ctx != NULL && out != NULL && m->ctx_id == h->id && a >= m->start &&
				     a < m->end && len - 1 < m->end - a && !(access & ~m->access),
			     1)) {
		const uint64_t epoch = __atomic_load_n(&h->epoch, __ATOMIC_ACQUIRE);
		if (__builtin_expect(epoch == m->epoch &&
					     __atomic_load_n(m->words[0], __ATOMIC_ACQUIRE) +
							     __atomic_load_n(m->words[1],
									     __ATOMIC_ACQUIRE) ==
						     m->gen,
				     1)) {
			mrsync_mru_add_(m->hold, 1);
			__atomic_signal_fence(__ATOMIC_SEQ_CST);
			if (__builtin_expect(__atomic_load_n(&h->epoch, __ATOMIC_ACQUIRE) == epoch, 1)) {
				__atomic_store_n(m->hits, __atomic_load_n(m->hits, __ATOMIC_RELAXED) + 1,
						 __ATOMIC_RELAXED);
				*out = m->reg;
				return 0;
			}
			mrsync_mru_add_(m->hold, -1);
		}
	}
	return mrsync_get_mru_slow(ctx, addr, len, access, out);
}

/**
 * mrsync_put(), inline when `reg` is this thread's last registration of
 * `ctx` (its hold counter is then at hand); else mrsync_put() itself.
 * Thread safety: as mrsync_put().
 */
static inline int mrsync_put_mru(struct mrsync_ctx *ctx, struct mrsync_reg *reg)
{
	struct mrsync_mru *m = &mrsync_mru_tls;
	if (__builtin_expect(ctx != NULL && reg != NULL && reg->region != NULL &&
				     reg->region == m->reg.region &&
				     m->ctx_id == ((const struct mrsync_ctx_hot *)ctx)->id,
			     1)) {
		mrsync_mru_add_(m->hold, -1);
		return 0;
	}
	return mrsync_put(ctx, reg);
}

#ifdef __cplusplus
}
#endif

#endif
