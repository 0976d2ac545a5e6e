// --socket-mem: the preallocated part never produces memory events (the EAL
// keeps it), memory beyond it does, and both stay correct.
#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

TEST(DpdkSocketMem, PreallocatedMemoryIsQuietAndMemoryBeyondItFollowsEvents)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	EXPECT_EQ(mrsync_dpdk_memory_is_static(a.md()), 0) << "memory beyond --socket-mem is dynamic";

	const auto s0 = a.stats();
	{
		EalBuffer small(1u << 20); /* fits in the preallocated 32 MiB */
		ASSERT_TRUE(small.p);
		EXPECT_TRUE(a.write_lands(small.p, 4096, 1));
	}
	EXPECT_EQ(a.stats().mem_free_events, s0.mem_free_events)
		<< "preallocated memory must never be freed";

	EalBuffer big(64u << 20); /* beyond it: allocated on demand */
	ASSERT_TRUE(big.p);
	EXPECT_TRUE(a.write_lands(big.p, 4096, 2));
	void *const at = big.p;
	big.reset();
	EXPECT_GT(a.stats().mem_free_events, s0.mem_free_events);
	EalBuffer again(64u << 20);
	ASSERT_TRUE(again.p);
	if (again.p == at)
		EXPECT_TRUE(a.write_lands(again.p, 4096, 3)) << "DMA lost after FREE + ALLOC";
}

} // namespace
} // namespace mrsync::test
