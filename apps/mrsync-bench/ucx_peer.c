/* SPDX-License-Identifier: MIT */
/* The UCX 1.13 rcache peer; see ucx_peer.h. */
#include "ucx_peer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ucm/api/ucm.h>
#include <ucs/memory/rcache.h>
#include <ucs/type/status.h>

#ifndef MRSYNC_BENCH_UCX_VERSION
#define MRSYNC_BENCH_UCX_VERSION "unknown"
#endif

/* A cached region and the key the dummy registration gave it. */
struct peer_region {
	ucs_rcache_region_t super;
	uint32_t lkey;
};

struct ucx_peer {
	ucs_rcache_t *rcache;
	uint32_t next_key;        /* written under the rcache's own lock */
	uint64_t registrations;
};

static ucs_status_t dummy_reg(void *context, ucs_rcache_t *rcache, void *arg,
			      ucs_rcache_region_t *region, uint16_t flags)
{
	struct ucx_peer *peer = context;
	(void)rcache;
	(void)arg;
	(void)flags;
	((struct peer_region *)region)->lkey = peer->next_key++;
	++peer->registrations;
	return UCS_OK;
}

static void dummy_dereg(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *region)
{
	(void)context;
	(void)rcache;
	(void)region;
}

static void dummy_dump(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *region,
		       char *buf, size_t max)
{
	(void)context;
	(void)rcache;
	snprintf(buf, max, "lkey %u", ((struct peer_region *)region)->lkey);
}

static const ucs_rcache_ops_t dummy_ops = {
	.mem_reg = dummy_reg,
	.mem_dereg = dummy_dereg,
	.dump_region = dummy_dump,
};

int ucx_peer_create(struct ucx_peer **out, int allow_no_events, unsigned long max_regions,
		    int *events, char *err, size_t err_len)
{
	struct ucx_peer *peer = calloc(1, sizeof(*peer));
	if (!peer) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	peer->next_key = 1;

	/* An rcache subscribes to UCM's VM_UNMAPPED events; without working
	 * munmap hooks ucs_rcache_create() fails. Bistro mode patches the
	 * libc entry points themselves, which works whatever the link order. */
	ucm_global_config_t opts = ucm_global_opts;
	opts.enable_events = 1;
	opts.mmap_hook_mode = UCM_MMAP_HOOK_BISTRO;
	ucm_set_global_opts(&opts);

	const size_t page = (size_t)sysconf(_SC_PAGESIZE);
	ucs_rcache_params_t params = {
		.region_struct_size = sizeof(struct peer_region),
		.alignment = page,
		.max_alignment = page,
		.ucm_events = UCM_EVENT_VM_UNMAPPED,
		.ucm_event_priority = 1000,
		.ops = &dummy_ops,
		.context = peer,
		.flags = 0,
		.max_regions = max_regions ? max_regions : ULONG_MAX,
		.max_size = SIZE_MAX,
		.max_unreleased = SIZE_MAX,
	};
	*events = 1;
	ucs_status_t status = ucs_rcache_create(&params, "mrsync-bench", NULL, &peer->rcache);
	if (status != UCS_OK && allow_no_events) {
		snprintf(err, err_len, "UCX rcache without munmap events (with them: %s)",
			 ucs_status_string(status));
		params.ucm_events = 0;
		*events = 0;
		status = ucs_rcache_create(&params, "mrsync-bench", NULL, &peer->rcache);
	}
	if (status != UCS_OK) {
		snprintf(err, err_len, "ucs_rcache_create: %s", ucs_status_string(status));
		free(peer);
		return -1;
	}
	*out = peer;
	return 0;
}

void ucx_peer_destroy(struct ucx_peer *peer)
{
	if (!peer)
		return;
	ucs_rcache_destroy(peer->rcache);
	free(peer);
}

int ucx_peer_add(struct ucx_peer *peer, const void *addr, size_t len)
{
	ucs_rcache_region_t *region;
	if (ucs_rcache_get(peer->rcache, (void *)addr, len, PROT_READ | PROT_WRITE, NULL,
			   &region) != UCS_OK)
		return -1;
	ucs_rcache_region_put(peer->rcache, region);
	return 0;
}

uint64_t ucx_peer_registrations(const struct ucx_peer *peer)
{
	return peer->registrations;
}

__attribute__((noinline)) uint64_t mrsync_bench_ucx_hit_loop(struct ucx_peer *peer,
							     const struct bench_access *a,
							     uint64_t mask, uint64_t start,
							     uint64_t n)
{
	ucs_rcache_t *rcache = peer->rcache;
	uint64_t sink = 0;
	for (uint64_t i = start; i < start + n; ++i) {
		const struct bench_access *e = &a[i & mask];
		ucs_rcache_region_t *region;
		if (ucs_rcache_get(rcache, (void *)e->addr, e->len, PROT_READ | PROT_WRITE, NULL,
				   &region) != UCS_OK)
			return UINT64_MAX;
		sink += ((struct peer_region *)region)->lkey;
		ucs_rcache_region_put(rcache, region);
	}
	return sink;
}

__attribute__((noinline)) uint64_t mrsync_bench_ucx_miss_loop(struct ucx_peer *peer,
							      const char *base, uint64_t stride,
							      uint64_t len, uint64_t start,
							      uint64_t n)
{
	ucs_rcache_t *rcache = peer->rcache;
	uint64_t sink = 0;
	for (uint64_t i = start; i < start + n; ++i) {
		ucs_rcache_region_t *region;
		if (ucs_rcache_get(rcache, (void *)(base + i * stride), len,
				   PROT_READ | PROT_WRITE, NULL, &region) != UCS_OK)
			return UINT64_MAX;
		sink += ((struct peer_region *)region)->lkey;
		ucs_rcache_region_put(rcache, region);
	}
	return sink;
}

const char *ucx_peer_version(void)
{
	return "UCX " MRSYNC_BENCH_UCX_VERSION;
}
