// The bug mrsync exists for, reproduced on the real kernel: an address-keyed
// cache that does not follow the address space hands out a registration
// whose pages are no longer the application's, and the DMA is silently lost.
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

TEST(StaleRegistration, NaiveCacheLosesTheWriteAfterMapFixed)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD, MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	Mapping buf(4 * kPage);
	ASSERT_TRUE(buf);
	auto reg = ctx.get(buf.at(0), 4 * kPage);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	const auto before = pattern(64, 1);
	ASSERT_EQ(dma_write(hca_of(ctx), reg->lkey(), buf.at(kPage), before), 64);
	ASSERT_TRUE(sees(buf.at(kPage), before)) << "the HCA does not work at all";
	reg->reset();

	ASSERT_TRUE(remap_fresh(buf.at(kPage), kPage));
	auto again = ctx.get(buf.at(kPage), 64);
	ASSERT_TRUE(again.ok());
	const auto after = pattern(64, 2);
	EXPECT_EQ(dma_write(hca_of(ctx), again->lkey(), buf.at(kPage), after), 64)
		<< "the stale write must look successful";
	EXPECT_FALSE(sees(buf.at(kPage), after)) << "the naive cache did not lose the write: "
						    "this test cannot show the bug";
}

TEST(StaleRegistration, MrsyncDeliversTheSameWrite)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	Mapping buf(4 * kPage);
	auto reg = ctx.get(buf.at(0), 4 * kPage);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	const Keys keys{reg->lkey(), reg->rkey()};
	reg->reset();

	ASSERT_TRUE(remap_fresh(buf.at(kPage), kPage));
	auto again = ctx.get(buf.at(kPage), 64);
	ASSERT_TRUE(again.ok()) << again.error().message;
	const auto after = pattern(64, 2);
	EXPECT_EQ(dma_write(hca_of(ctx), again->lkey(), buf.at(kPage), after), 64);
	EXPECT_TRUE(sees(buf.at(kPage), after));
	EXPECT_EQ((Keys{again->lkey(), again->rkey()}), keys) << "keys must survive a resync";
	EXPECT_EQ(ctx.stats().entries_repinned, 1u) << "only the remapped page is re-pinned";
}

} // namespace
} // namespace mrsync::test
