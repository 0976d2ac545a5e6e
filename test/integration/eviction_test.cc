// Limits: the LRU evicts unused registrations past max_regions and
// max_registered_bytes, never one in use; errors say which limit.
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

Context limited(std::uint32_t max_regions, std::uint64_t max_bytes)
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.sources = MRSYNC_SOURCE_UFFD;
	p.max_regions = max_regions;
	p.max_registered_bytes = max_bytes;
	return make_context(p);
}

TEST(Eviction, UnusedRegionsGoPastMaxRegions)
{
	Context ctx = limited(4, 0);
	Mapping buf(16 * kPage);
	for (unsigned i = 0; i < 16; ++i)
		ASSERT_TRUE(ctx.hint(buf.at(i * kPage), kPage).ok()) << i;
	const mrsync_stats s = ctx.stats();
	EXPECT_LE(s.regions, 4u);
	EXPECT_GE(s.evictions, 12u);
	/* Evicted ones come back on demand. */
	auto reg = ctx.get(buf.at(0), 64);
	ASSERT_TRUE(reg.ok());
	EXPECT_EQ(dma_write(hca_of(ctx), reg->lkey(), buf.at(0), pattern(64, 1)), 64);
	EXPECT_TRUE(sees(buf.at(0), pattern(64, 1)));
}

TEST(Eviction, RegionsInUseAreNeverEvicted)
{
	Context ctx = limited(2, 0);
	Mapping buf(4 * kPage);
	auto a = ctx.get(buf.at(0), 64);
	auto b = ctx.get(buf.at(kPage), 64);
	ASSERT_TRUE(a.ok() && b.ok());
	auto c = ctx.get(buf.at(2 * kPage), 64);
	ASSERT_FALSE(c.ok());
	EXPECT_EQ(c.error().code, ENOSPC);
	EXPECT_NE(c.error().message.find("max_regions"), std::string::npos);
	/* Both held registrations still move data. */
	EXPECT_EQ(dma_write(hca_of(ctx), a->lkey(), buf.at(0), pattern(64, 2)), 64);
	EXPECT_EQ(dma_write(hca_of(ctx), b->lkey(), buf.at(kPage), pattern(64, 3)), 64);
	EXPECT_TRUE(sees(buf.at(0), pattern(64, 2)));
	EXPECT_TRUE(sees(buf.at(kPage), pattern(64, 3)));
	a->reset();
	auto d = ctx.get(buf.at(2 * kPage), 64);
	EXPECT_TRUE(d.ok()) << d.error().message;
}

TEST(Eviction, MaxRegisteredBytes)
{
	Context ctx = limited(0, 4 * kPage);
	Mapping buf(8 * kPage);
	auto held = ctx.get(buf.at(0), 3 * kPage);
	ASSERT_TRUE(held.ok());
	auto too_big = ctx.get(buf.at(4 * kPage), 2 * kPage);
	ASSERT_FALSE(too_big.ok());
	EXPECT_EQ(too_big.error().code, ENOSPC);
	EXPECT_NE(too_big.error().message.find("max_registered_bytes"), std::string::npos);
	held->reset();
	EXPECT_TRUE(ctx.get(buf.at(4 * kPage), 2 * kPage).ok());
	EXPECT_LE(ctx.stats().registered_bytes, 4 * kPage);
}

} // namespace
} // namespace mrsync::test
