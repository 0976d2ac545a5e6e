// Mempools registered by DPDK's mempool events: a pool populated after
// attach needs no mrsync_dpdk_register_mempool() call. Negative control:
// with MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS the same lookups miss page by page.
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

constexpr unsigned kMbufs = 64; /* ~37 pages of mbufs: more than an lcore cache holds */

int count_chunks(rte_mempool *mp)
{
	int n = 0;
	rte_mempool_mem_iter(
		mp, [](rte_mempool *, void *arg, rte_mempool_memhdr *, unsigned) { ++*static_cast<int *>(arg); },
		&n);
	return n;
}

class MempoolEvents : public ::testing::TestWithParam<bool> {};

TEST_P(MempoolEvents, PoolCreatedAfterAttachIsRegisteredWithoutACall)
{
	const bool follow = GetParam();
	Attached a(MRSYNC_SOURCE_MANUAL, 0, follow ? 0 : MRSYNC_DPDK_F_NO_MEMPOOL_EVENTS);
	ASSERT_TRUE(a);
	const auto s0 = a.stats();
	rte_mempool *pool = rte_pktmbuf_pool_create("mrsync-auto-pool", 2047, 0, 0,
						    RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
	ASSERT_NE(pool, nullptr);
	const auto s1 = a.stats();
	const auto chunks = std::uint64_t(count_chunks(pool));
	if (follow)
		EXPECT_EQ(s1.hinted_runs - s0.hinted_runs, chunks) << "READY did not register the pool";
	else
		EXPECT_EQ(s1.hinted_runs, s0.hinted_runs) << "negative control: no events, no hint";

	rte_mbuf *m[kMbufs];
	ASSERT_EQ(rte_pktmbuf_alloc_bulk(pool, m, kMbufs), 0);
	for (rte_mbuf *mb : m) {
		mrsync_dpdk_key key;
		ASSERT_EQ(mrsync_dpdk_mbuf_key(a.lcore(), mb, &key), 0) << mrsync_dpdk_last_error();
	}
	const auto s2 = a.stats();
	const std::uint64_t misses = s2.lcore_misses - s1.lcore_misses;
	if (follow)
		EXPECT_LE(misses, chunks) << "mbufs of a registered pool should hit its chunk";
	else
		EXPECT_GE(misses, kMbufs / 4) << "negative control: an unregistered pool misses per page";
	EXPECT_TRUE(a.write_lands(rte_pktmbuf_mtod(m[kMbufs / 2], char *), 256, 7));

	/* Both ways at once: the explicit call finds the pool registered and
	 * registers nothing twice. */
	const auto regions = a.stats().core.regions;
	EXPECT_EQ(mrsync_dpdk_register_mempool(a.md(), pool), int(chunks));
	const auto after_call = a.stats().core.regions;
	EXPECT_EQ(mrsync_dpdk_register_mempool(a.md(), pool), int(chunks));
	EXPECT_EQ(a.stats().core.regions, after_call) << "a second registration of the same pool";
	EXPECT_EQ(after_call, follow ? regions : after_call) << "the event and the call both registered";

	rte_pktmbuf_free_bulk(m, kMbufs);
	mrsync_dpdk_lcore_flush(a.lcore());
	rte_mempool_free(pool); /* DESTROY: the chunks are forgotten before the memory goes */
	EalBuffer after(4u << 20);
	ASSERT_TRUE(after.p);
	EXPECT_TRUE(a.write_lands(after.p, 4096, 8));
}

INSTANTIATE_TEST_SUITE_P(Dpdk, MempoolEvents, ::testing::Bool(),
			 [](const auto &info) { return info.param ? "Events" : "NoEventsNegativeControl"; });

TEST(MempoolEvents, UnknownFlagsRefused)
{
	mrsync_dpdk_params p = MRSYNC_DPDK_PARAMS_INIT;
	p.flags = 1u << 7;
	mrsync_dpdk *md = nullptr;
	EXPECT_EQ(mrsync_dpdk_attach(&p, &md), -EINVAL);
	EXPECT_NE(std::string(mrsync_dpdk_last_error()).find("params->flags"), std::string::npos);
	EXPECT_EQ(md, nullptr);
}

} // namespace
} // namespace mrsync::test
