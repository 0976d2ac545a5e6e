// Mbufs whose data lives outside the EAL's memory (rte_pktmbuf_attach_extbuf
// on plain anonymous memory): the EAL reports nothing when such a buffer is
// unmapped and mapped again, so the other source (userfaultfd here) must.
#include <sys/mman.h>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

class ExternalBuffer : public ::testing::TestWithParam<bool> {};

TEST_P(ExternalBuffer, RemapUnderAnAttachedMbufIsFollowed)
{
	const bool generation_check = GetParam();
	Attached a(MRSYNC_SOURCE_UFFD, generation_check ? 0 : MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	ASSERT_TRUE(a);
	rte_mempool *pool = rte_pktmbuf_pool_create("mrsync-ext-pool", 255, 0, 0, 0, SOCKET_ID_ANY);
	ASSERT_NE(pool, nullptr);
	constexpr std::size_t kLen = 16 * kPage;
	Mapping buf(kLen);
	ASSERT_TRUE(buf);
	rte_mbuf_ext_shared_info shinfo{};
	shinfo.free_cb = [](void *, void *) {};
	rte_mbuf_ext_refcnt_set(&shinfo, 1);
	rte_mbuf *m = rte_pktmbuf_alloc(pool);
	ASSERT_NE(m, nullptr);
	rte_pktmbuf_attach_extbuf(m, buf.at(0), RTE_BAD_IOVA, kLen - kPage, &shinfo);
	ASSERT_TRUE(RTE_MBUF_HAS_EXTBUF(m));

	mrsync_dpdk_key key;
	ASSERT_EQ(mrsync_dpdk_mbuf_key(a.lcore(), m, &key), 0);
	EXPECT_LE(key.addr, reinterpret_cast<std::uint64_t>(buf.at(0)));
	ASSERT_TRUE(a.write_lands(buf.at(kPage), 512, 7));

	ASSERT_TRUE(remap_fresh(buf.at(2 * kPage), 2 * kPage));
	const bool landed = a.write_lands(buf.at(2 * kPage), 512, 8);
	if (generation_check)
		EXPECT_TRUE(landed) << "DMA into the remapped external buffer was lost";
	else
		EXPECT_FALSE(landed) << "negative control: the stale page should take the write";
	EXPECT_TRUE(a.write_lands(buf.at(kPage), 512, 9)) << "untouched page stopped working";

	rte_pktmbuf_detach_extbuf(m);
	rte_pktmbuf_free(m);
	rte_mempool_free(pool);
}

INSTANTIATE_TEST_SUITE_P(Dpdk, ExternalBuffer, ::testing::Values(true, false),
			 [](const auto &info) {
				 return info.param ? "GenerationChecked" : "NegativeControl";
			 });

} // namespace
} // namespace mrsync::test
