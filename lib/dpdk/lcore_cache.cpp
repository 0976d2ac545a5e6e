/* SPDX-License-Identifier: MIT */
/* The miss path of the per-lcore cache (the hit path is inline in
 * mrsync_dpdk.h). An lcore's cache is written by that lcore only. */
#include <cerrno>

#include <rte_lcore.h>

#include "dpdk_pvt.hpp"

namespace {

void drop(mrsync_dpdk_lcore_entry &e, mrsync_ctx *ctx)
{
	if (e.reg.region)
		(void)mrsync_put(ctx, &e.reg);
	e = {};
}

} // namespace

extern "C" {

struct mrsync_dpdk_lcore *mrsync_dpdk_lcore_cache(struct mrsync_dpdk *md)
{
	const unsigned id = rte_lcore_id();
	if (!md || id >= RTE_MAX_LCORE) {
		(void)mrsync_dpdk_fail(EINVAL, !md ? "mrsync_dpdk_lcore_cache: md is NULL"
						   : "mrsync_dpdk_lcore_cache: not an EAL thread "
						     "(rte_thread_register() it first)");
		return nullptr;
	}
	return &md->lcores[id];
}

void mrsync_dpdk_lcore_flush(struct mrsync_dpdk_lcore *c)
{
	if (!c || !c->md)
		return;
	for (std::uint32_t i = 0; i < c->n; ++i)
		drop(c->entries[i], c->md->ctx);
	c->n = 0;
	c->next_victim = 0;
}

int mrsync_dpdk_lookup_slow(struct mrsync_dpdk_lcore *c, const void *addr, size_t len,
			    struct mrsync_dpdk_key *out)
{
	if (!c || !c->md || !addr || !len || !out)
		return mrsync_dpdk_fail_core(-EINVAL, !c || !c->md ? "lookup: c is not an lcore cache"
						  : !addr ? "lookup: addr is NULL"
						  : !len ? "lookup: len is 0"
							 : "lookup: out is NULL");
	mrsync_dpdk *md = c->md;
	c->misses++;
	md->hint_new_memory();

	/* read_begin *before* mrsync_get(): whatever changes after it moves
	 * the sum again and the next lookup refills. When the words moved,
	 * they are fetched again with the new value: a fork child's context
	 * swaps its sources' words (and moves its own word, the last, past
	 * every old sum, so the old words always show the move). */
	if (mrsync_gen_retry(c->words, c->nwords, c->generation)) {
		mrsync_dpdk_lcore_flush(c);
		c->flushes++;
		if (md->check_generations) {
			const int n = mrsync_generation_words(md->ctx, c->words,
							      MRSYNC_DPDK_MAX_GEN_WORDS);
			c->nwords = n > 0 ? std::uint32_t(n) : 0;
		}
		c->generation = mrsync_gen_begin(c->words, c->nwords);
	}
	const auto a = reinterpret_cast<std::uint64_t>(addr);
	const mrsync::Range want = md->cache_range(a, len);
	mrsync_reg reg;
	int rc = mrsync_get(md->ctx, reinterpret_cast<const void *>(want.start),
			    want.end - want.start, md->access, &reg);
	if (rc < 0 && (want.start != a || want.end != a + len)) /* part of a chunk is gone */
		rc = mrsync_get(md->ctx, addr, len, md->access, &reg);
	if (rc < 0)
		return mrsync_dpdk_fail_core(rc, "lookup");
	mrsync_dpdk_lcore_entry *e;
	if (c->n < MRSYNC_DPDK_LCORE_ENTRIES) {
		e = &c->entries[c->n++];
	} else {
		e = &c->entries[c->next_victim];
		c->next_victim = (c->next_victim + 1) % MRSYNC_DPDK_LCORE_ENTRIES;
		drop(*e, md->ctx);
	}
	const bool whole = rc == 0 && reg.addr <= want.start &&
			   want.end <= reg.addr + reg.length;
	e->start = whole ? want.start : a;
	e->len = whole ? want.end - want.start : len;
	e->key = {reg.addr, reg.length, reg.lkey, reg.rkey};
	e->reg = reg;
	*out = e->key;
	return 0;
}

} // extern "C"
