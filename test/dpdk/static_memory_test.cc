// --no-huge: the EAL's memory is plain, preallocated and never freed; the
// EAL refuses memory-event callbacks. mrsync says so, registers it once and
// still follows external buffers through userfaultfd.
#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

TEST(DpdkStaticMemory, SaysStaticRegistersOnceAndStillFollowsExternalBuffers)
{
	Attached a(MRSYNC_SOURCE_UFFD);
	ASSERT_TRUE(a);
	EXPECT_EQ(mrsync_dpdk_memory_is_static(a.md()), 1);
	EXPECT_EQ(a.stats().memory_static, 1u);
	EXPECT_GE(a.stats().hinted_runs, 1u);

	EalBuffer eal(1u << 20);
	ASSERT_TRUE(eal.p);
	EXPECT_TRUE(a.write_lands(eal.p, 4096, 1));

	Mapping ext(4 * kPage);
	ASSERT_TRUE(ext);
	EXPECT_TRUE(a.write_lands(ext.at(kPage), 256, 2));
	ASSERT_TRUE(remap_fresh(ext.at(kPage), kPage));
	EXPECT_TRUE(a.write_lands(ext.at(kPage), 256, 3)) << "external remap not followed";
}

} // namespace
} // namespace mrsync::test
