/* SPDX-License-Identifier: MIT */
/* mrsync-bench: the UCX 1.13 peer -- a ucs_rcache with a dummy registration
 * (it pins nothing, like mrsync's null driver), so only UCX's cache
 * machinery is timed. Written in C: UCX's headers are C headers. Built only
 * when meson finds ucx-ucs (MRSYNC_BENCH_HAVE_UCX). */
#ifndef MRSYNC_BENCH_UCX_PEER_H
#define MRSYNC_BENCH_UCX_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "access.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ucx_peer;

/**
 * Creates the cache. UCX only creates an rcache subscribed to munmap events
 * when it can install its munmap hooks: the peer selects the bistro hook
 * mode first. Where even that fails (under valgrind, UCM refuses to patch
 * code), the cache is created without events when `allow_no_events` is set:
 * its hit path is the same code, only invalidation is missing.
 * @param max_regions UCX's region cap (ucs_rcache_params.max_regions), past
 *        which it evicts the least recently used unused region; 0 = none.
 * @param events receives 1 if the cache gets munmap events, else 0.
 * @param err receives UCX's status text on failure, or why events are off.
 * @return 0 or -1.
 * Thread safety: call once, before any other peer call.
 */
int ucx_peer_create(struct ucx_peer **out, int allow_no_events, unsigned long max_regions,
		    int *events, char *err, size_t err_len);

/** Destroys the cache (every region must have been put). */
void ucx_peer_destroy(struct ucx_peer *peer);

/** Caches [addr, addr + len) as one region (get, then put: the page table
 *  keeps it). @return 0 or -1. */
int ucx_peer_add(struct ucx_peer *peer, const void *addr, size_t len);

/** Regions the dummy registration created so far. */
uint64_t ucx_peer_registrations(const struct ucx_peer *peer);

/**
 * The hit loop: n times ucs_rcache_get + ucs_rcache_region_put on
 * a[(start + i) & mask]. A stable name for callgrind --toggle-collect.
 * @return a sum of the keys (keeps the work alive), or UINT64_MAX on a failed get.
 * Thread safety: any number of threads (the rcache is thread-safe).
 */
uint64_t mrsync_bench_ucx_hit_loop(struct ucx_peer *peer, const struct bench_access *a,
				   uint64_t mask, uint64_t start, uint64_t n);

/** The miss loop: n get+put of [base + (start + i) * stride, +len), fresh
 *  ranges the cache has not seen. @return as above. */
uint64_t mrsync_bench_ucx_miss_loop(struct ucx_peer *peer, const char *base, uint64_t stride,
				    uint64_t len, uint64_t start, uint64_t n);

/** "UCX x.y.z" of the library actually loaded. */
const char *ucx_peer_version(void);

#ifdef __cplusplus
}
#endif

#endif
