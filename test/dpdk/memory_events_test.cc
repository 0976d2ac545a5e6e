// libmrsync_dpdk with the EAL in --in-memory mode on real hugepages: its
// memory events drive the resync. The external source is the manual one
// (nothing is ever notified), so only the EAL's FREE events can save a DMA.
#include <chrono>
#include <thread>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

constexpr std::size_t kMiB = 1u << 20;

long free_hugepages() { return meminfo("HugePages_Free:"); }

/* Waits (bounded) for the kernel to see the pages released. */
long free_hugepages_settled(long want)
{
	long now = free_hugepages();
	for (int i = 0; i < 200 && now < want; ++i) {
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
		now = free_hugepages();
	}
	return now;
}

TEST(DpdkAttach, RegistersTheEalMemoryAndRefusesASecondAttach)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	EXPECT_EQ(mrsync_dpdk_memory_is_static(a.md()), 0);
	const auto s = a.stats();
	EXPECT_GE(s.hinted_runs, 1u) << "the EAL's memory at attach was not registered";
	EXPECT_GE(s.core.regions, 1u);

	mrsync_dpdk *second = nullptr;
	EXPECT_EQ(mrsync_dpdk_attach(nullptr, &second), -EEXIST);
	EXPECT_NE(std::string(mrsync_dpdk_last_error()).find("already attached"), std::string::npos);
	mrsync_dpdk_params bad = MRSYNC_DPDK_PARAMS_INIT;
	bad.struct_size = 3;
	EXPECT_EQ(mrsync_dpdk_attach(&bad, &second), -EINVAL);
	EXPECT_NE(std::string(mrsync_dpdk_last_error()).find("struct_size"), std::string::npos);
	EXPECT_EQ(mrsync_dpdk_register_mempool(a.md(), nullptr), -EINVAL);
	EXPECT_NE(std::string(mrsync_dpdk_last_error()).find("mp is NULL"), std::string::npos);
}

/* Free and allocate again: the EAL hands out the same addresses backed by
 * new hugepages. A cache that missed the FREE DMAs into the old pages. */
class FreeRealloc : public ::testing::TestWithParam<bool> {};

TEST_P(FreeRealloc, DmaLandsInTheNewPages)
{
	const bool generation_check = GetParam();
	Attached a(MRSYNC_SOURCE_MANUAL,
		   generation_check ? 0 : MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	ASSERT_TRUE(a);
	EalBuffer first(8 * kMiB);
	ASSERT_TRUE(first.p);
	void *const at = first.p;
	ASSERT_TRUE(a.write_lands(at, 4096, 1));

	const auto before = a.stats();
	first.reset();
	EalBuffer again(8 * kMiB);
	ASSERT_TRUE(again.p);
	if (again.p != at)
		GTEST_SKIP() << "the EAL did not reuse the address; nothing stale to test";
	const auto events = a.stats();
	EXPECT_GT(events.mem_free_events, before.mem_free_events);
	EXPECT_GT(events.mem_alloc_events, before.mem_alloc_events);
	const bool landed = a.write_lands(at, 4096, 2) &&
			    a.write_lands(static_cast<char *>(at) + 6 * kMiB, 4096, 3);
	if (generation_check) {
		/* The lookup miss hinted the ALLOC'd range: one registration. */
		EXPECT_GT(a.stats().hinted_runs, events.hinted_runs) << "the ALLOC was not registered";
		EXPECT_TRUE(landed) << "DMA after the EAL freed and reallocated was lost";
		EXPECT_GE(a.stats().core.resyncs, 1u);
	} else {
		EXPECT_FALSE(landed) << "negative control: without the generation check the "
					"stale translation should lose the write";
	}
}

INSTANTIATE_TEST_SUITE_P(Dpdk, FreeRealloc, ::testing::Values(true, false),
			 [](const auto &info) {
				 return info.param ? "GenerationChecked" : "NegativeControl";
			 });

TEST(DpdkEvents, FreeOfASubRangeLeavesTheRestOfTheRegistrationAlone)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	EalBuffer left(6 * kMiB), right(6 * kMiB);
	ASSERT_TRUE(left.p && right.p);
	auto *lo = static_cast<char *>(std::min(left.p, right.p));
	auto *hi = static_cast<char *>(std::max(left.p, right.p));
	if (hi - lo > long(16 * kMiB))
		GTEST_SKIP() << "the two allocations are not close; no common registration";
	/* One registration over both. */
	ASSERT_EQ(mrsync_hint(a.ctx(), lo, hi + 6 * kMiB - lo, MRSYNC_ACCESS_ALL), 0);
	mrsync_reg before{};
	ASSERT_EQ(mrsync_get(a.ctx(), hi, 4096, MRSYNC_ACCESS_ALL, &before), 0);
	ASSERT_EQ(mrsync_put(a.ctx(), &before), 0);

	const auto full_before = a.stats().core.full_resyncs;
	(lo == left.p ? left : right).reset(); /* FREE of the low part only */
	ASSERT_EQ(mrsync_resync(a.ctx()), 0);
	const auto s = a.stats();
	EXPECT_GT(s.core.entries_invalidated, 0u) << "the freed part was not invalidated";
	EXPECT_EQ(s.core.full_resyncs, full_before) << "a sub-range FREE must not redo everything";
	mrsync_reg after{};
	ASSERT_EQ(mrsync_get(a.ctx(), hi, 4096, MRSYNC_ACCESS_ALL, &after), 0);
	EXPECT_EQ(after.lkey, before.lkey) << "keys must survive the resync";
	EXPECT_EQ(after.addr, before.addr);
	ASSERT_EQ(mrsync_put(a.ctx(), &after), 0);
	EXPECT_TRUE(a.write_lands(hi + kMiB, 4096, 4)) << "untouched part stopped working";
}

TEST(DpdkEvents, FreedHugepagesGoBackToTheSystemAtTheResync)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	const long before = free_hugepages();
	EalBuffer buf(16 * kMiB);
	ASSERT_TRUE(buf.p);
	ASSERT_TRUE(a.write_lands(buf.p, 4096, 5)); /* registered and pinned */
	const long allocated = free_hugepages();
	ASSERT_LE(allocated, before - 8) << "16 MiB did not take hugepages";

	buf.reset();
	/* DPDK unmapped them, but the pins hold them: this is what a cache that
	 * ignores FREE does to a dataplane's memory. */
	EXPECT_LT(free_hugepages(), before - 4) << "pins did not hold the freed hugepages";
	ASSERT_EQ(mrsync_resync(a.ctx()), 0);
	const long released = free_hugepages_settled(before);
	EXPECT_GE(released, before - 1) << "freed hugepages stayed pinned after the resync ("
					<< before << " free before, " << released << " after)";
}

TEST(DpdkMempool, ChunksRegisteredInOneCallAndLcoreLookupsAcrossAFree)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	rte_mempool *pool = rte_pktmbuf_pool_create("mrsync-test-pool", 2047, 0, 0,
						    RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
	ASSERT_NE(pool, nullptr);
	const int chunks = mrsync_dpdk_register_mempool(a.md(), pool);
	EXPECT_GE(chunks, 1);

	rte_mbuf *m[32];
	ASSERT_EQ(rte_pktmbuf_alloc_bulk(pool, m, 32), 0);
	const auto s0 = a.stats();
	mrsync_dpdk_key first{};
	for (rte_mbuf *mb : m) {
		mrsync_dpdk_key key;
		ASSERT_EQ(mrsync_dpdk_mbuf_key(a.lcore(), mb, &key), 0);
		if (!first.lkey)
			first = key;
	}
	const auto s1 = a.stats();
	EXPECT_EQ(s1.lookups - s0.lookups, 32u);
	EXPECT_GE(s1.lcore_hits - s0.lcore_hits, 31u) << "mbufs of one chunk should hit";

	/* Someone else's free moves the generation: the lcore drops its
	 * cache once and refills, the pool's key is unchanged. */
	{
		EalBuffer other(4 * kMiB);
		ASSERT_TRUE(other.p);
	}
	mrsync_dpdk_key key;
	ASSERT_EQ(mrsync_dpdk_mbuf_key(a.lcore(), m[0], &key), 0);
	const auto s2 = a.stats();
	EXPECT_EQ(s2.lcore_flushes - s1.lcore_flushes, 1u);
	EXPECT_EQ(key.lkey, first.lkey);
	auto *data = rte_pktmbuf_mtod(m[0], char *);
	EXPECT_TRUE(a.write_lands(data, 256, 6));

	/* The burst form: one generation check, the same keys, and a refill
	 * after a FREE moved the generation. */
	std::uint32_t lkeys[32];
	ASSERT_EQ(mrsync_dpdk_mbuf_lkeys(a.lcore(), m, 32, lkeys), 0);
	for (std::uint32_t k : lkeys)
		EXPECT_EQ(k, first.lkey);
	const auto s3 = a.stats();
	{
		EalBuffer other(4 * kMiB);
		ASSERT_TRUE(other.p);
	}
	ASSERT_EQ(mrsync_dpdk_mbuf_lkeys(a.lcore(), m, 32, lkeys), 0);
	const auto s4 = a.stats();
	EXPECT_EQ(s4.lcore_flushes - s3.lcore_flushes, 1u);
	EXPECT_EQ(s4.lookups - s3.lookups, 32u);
	EXPECT_EQ(s4.lcore_misses - s3.lcore_misses, 1u) << "one miss refills for the burst";
	for (std::uint32_t k : lkeys)
		EXPECT_EQ(k, first.lkey);
	rte_pktmbuf_free_bulk(m, 32);
	rte_mempool_free(pool);
}

} // namespace
} // namespace mrsync::test
