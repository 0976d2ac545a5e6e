/* SPDX-License-Identifier: MIT */
/* libmrsync_dpdk in a DPDK program: attach after rte_eal_init(), register
 * an mbuf pool, look an mbuf's key up on this lcore's cache. Run it with EAL
 * arguments, e.g. `hello-dpdk --in-memory --no-pci -l 0` (2 MiB hugepages
 * reserved: /proc/sys/vm/nr_hugepages). */
#include <stdio.h>

#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <mrsync/mrsync_dpdk.h>

int main(int argc, char **argv)
{
	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "hello-dpdk: rte_eal_init failed\n");
		return 1;
	}
	int status = 1;
	struct mrsync_dpdk *md = NULL;
	if (mrsync_dpdk_attach(NULL, &md) < 0) {
		fprintf(stderr, "hello-dpdk: attach: %s\n", mrsync_dpdk_last_error());
		goto out;
	}
	struct rte_mempool *mp = rte_pktmbuf_pool_create("hello", 1023, 0, 0,
							 RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
	if (!mp || mrsync_dpdk_register_mempool(md, mp) < 0) {
		fprintf(stderr, "hello-dpdk: mbuf pool: %s\n",
			mp ? mrsync_dpdk_last_error() : "rte_pktmbuf_pool_create failed");
		goto detach;
	}
	struct rte_mbuf *m = rte_pktmbuf_alloc(mp);
	struct mrsync_dpdk_lcore *cache = mrsync_dpdk_lcore_cache(md);
	struct mrsync_dpdk_key key;
	if (!m || !cache || mrsync_dpdk_mbuf_key(cache, m, &key) < 0) {
		fprintf(stderr, "hello-dpdk: mbuf key: %s\n", mrsync_dpdk_last_error());
	} else {
		struct mrsync_dpdk_stats s;
		mrsync_dpdk_get_stats(md, &s, sizeof s);
		printf("hello-dpdk: mbuf %p -> lkey %u; %llu lookup(s), %llu pool chunk(s) or "
		       "hugepage run(s) registered\n",
		       (void *)m, key.lkey, (unsigned long long)s.lookups,
		       (unsigned long long)s.hinted_runs);
		status = 0;
	}
	rte_pktmbuf_free(m);
	mrsync_dpdk_lcore_flush(cache);
detach:
	mrsync_dpdk_detach(&md);
	rte_mempool_free(mp);
out:
	rte_eal_cleanup();
	return status;
}
