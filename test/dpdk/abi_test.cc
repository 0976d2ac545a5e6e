// libmrsync_dpdk's C ABI rules (mrsync_dpdk.h, "Errors", struct sizes):
// params and stats of an older header, too small or NULL ones, and the one
// error channel (pointer-returning calls too).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

std::string last() { return mrsync_dpdk_last_error(); }

/* `size` bytes ending where an inaccessible page begins: reading or writing
 * past the caller's size faults. */
void *at_page_end(std::size_t size)
{
	const long page = sysconf(_SC_PAGESIZE);
	auto *p = static_cast<char *>(mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	if (p == MAP_FAILED || mprotect(p + page, page, PROT_NONE) != 0)
		return nullptr;
	return p + page - size;
}

TEST(DpdkAbi, OlderSmallerParamsAreAccepted)
{
	/* an older header: the struct ends after ctx_flags */
	const std::size_t old = offsetof(mrsync_dpdk_params, ctx_flags) + sizeof(std::uint32_t);
	mrsync_dpdk_params full = MRSYNC_DPDK_PARAMS_INIT;
	full.struct_size = old;
	full.extra_sources = MRSYNC_SOURCE_MANUAL;
	full.driver = "uring";
	void *p = at_page_end(old);
	ASSERT_NE(p, nullptr);
	std::memcpy(p, &full, old);
	mrsync_dpdk *md = nullptr;
	ASSERT_EQ(mrsync_dpdk_attach(static_cast<const mrsync_dpdk_params *>(p), &md), 0) << last();
	mrsync_dpdk_detach(&md);

	full.struct_size = 4;
	EXPECT_EQ(mrsync_dpdk_attach(&full, &md), -EINVAL);
	EXPECT_NE(last().find("params->struct_size"), std::string::npos) << last();
}

TEST(DpdkAbi, StatsOfAnyHeaderSizeAndBadOnes)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	ASSERT_TRUE(a);
	/* an older, smaller struct: nothing written past it */
	const std::size_t old = offsetof(mrsync_dpdk_stats, memory_static);
	auto *s = static_cast<mrsync_dpdk_stats *>(at_page_end(old));
	ASSERT_NE(s, nullptr);
	std::memset(s, 0xaa, old);
	ASSERT_EQ(mrsync_dpdk_get_stats(a.md(), s, old), 0) << last();
	EXPECT_GE(s->hinted_runs, 1u);
	/* a newer, larger one: the unknown tail is zeroed */
	struct {
		mrsync_dpdk_stats s;
		std::uint64_t future;
	} big;
	std::memset(&big, 0xaa, sizeof big);
	ASSERT_EQ(mrsync_dpdk_get_stats(a.md(), &big.s, sizeof big), 0) << last();
	EXPECT_EQ(big.future, 0u);

	mrsync_dpdk_stats one;
	EXPECT_EQ(mrsync_dpdk_get_stats(a.md(), nullptr, sizeof one), -EINVAL);
	EXPECT_NE(last().find("out is NULL"), std::string::npos) << last();
	EXPECT_EQ(mrsync_dpdk_get_stats(a.md(), &one, 4), -EINVAL);
	EXPECT_NE(last().find("out_size"), std::string::npos) << last();
	EXPECT_EQ(mrsync_dpdk_get_stats(nullptr, &one, sizeof one), -EINVAL);
	EXPECT_NE(last().find("md is NULL"), std::string::npos) << last();
}

TEST(DpdkAbi, PointerCallsReportThroughTheSameChannel)
{
	EXPECT_EQ(mrsync_dpdk_lcore_cache(nullptr), nullptr);
	EXPECT_NE(last().find("md is NULL"), std::string::npos) << last();
}

} // namespace
} // namespace mrsync::test
