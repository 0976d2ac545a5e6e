// Bad input at the C ABI: every call answers with its documented -errno and
// a message naming the argument, and nothing leaks (no region, no pin).
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>

#include "support/privileges.hpp"
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

std::string last() { return mrsync_last_error(); }

TEST(BadInput, ContextParameters)
{
	mrsync_ctx *ctx = nullptr;
	EXPECT_EQ(mrsync_ctx_create(nullptr, nullptr), -EINVAL);
	EXPECT_NE(last().find("out"), std::string::npos);

	/* below the smallest layout (struct_size and sources): older, smaller
	 * structs are accepted (test/abi/sizes_test.c) */
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.struct_size = 4;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("struct_size"), std::string::npos);
	EXPECT_EQ(ctx, nullptr);

	p = MRSYNC_PARAMS_INIT;
	p.sources = 1u << 20;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("sources"), std::string::npos);

	p = MRSYNC_PARAMS_INIT;
	p.flags = 1u << 30;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("flags"), std::string::npos);

	p = MRSYNC_PARAMS_INIT;
	p.reserved = 1;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("reserved"), std::string::npos);

	for (std::uint64_t bad : {std::uint64_t(3000), std::uint64_t(2048), std::uint64_t(1) << 31}) {
		p = MRSYNC_PARAMS_INIT;
		p.entry_size = bad;
		EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL) << bad;
		EXPECT_NE(last().find("entry_size"), std::string::npos);
	}

	p = MRSYNC_PARAMS_INIT;
	p.max_regions = ~0u;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("max_regions"), std::string::npos);

	p = MRSYNC_PARAMS_INIT;
	p.ring_entries = 3;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(last().find("ring_entries"), std::string::npos);

	p = MRSYNC_PARAMS_INIT;
	p.driver = "no-such-driver";
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -ENODEV);
	EXPECT_NE(last().find("no-such-driver"), std::string::npos);
	EXPECT_EQ(ctx, nullptr);

	mrsync_ctx_destroy(nullptr); /* harmless */
	mrsync_ctx_destroy(&ctx);
}

class BadCalls : public ::testing::Test {
protected:
	void SetUp() override
	{
		mrsync_params p = MRSYNC_PARAMS_INIT;
		p.driver = "uring";
		p.sources = MRSYNC_SOURCE_UFFD;
		ASSERT_EQ(mrsync_ctx_create(&p, &ctx_), 0) << last();
	}
	void TearDown() override
	{
		/* Nothing the failed calls did may still hold anything. */
		mrsync_stats s{};
		ASSERT_EQ(mrsync_get_stats(ctx_, &s, sizeof s), 0);
		EXPECT_EQ(s.regions, expected_regions_);
		if (!expected_regions_) {
			EXPECT_EQ(s.pinned_bytes, 0u);
			auto &hca = dynamic_cast<uring::Hca &>(driver_of(ctx_));
			ASSERT_TRUE(hca.wait_releases().ok());
			EXPECT_EQ(hca.stats().slots_in_use, 0u);
			EXPECT_EQ(hca.stats().pinned_bytes, 0u);
		}
		mrsync_ctx_destroy(&ctx_);
		EXPECT_EQ(ctx_, nullptr);
	}
	mrsync_ctx *ctx_ = nullptr;
	std::uint64_t expected_regions_ = 0;
};

TEST_F(BadCalls, GetWithNullZeroWrappingAndOversizedArguments)
{
	Mapping buf(4 * kPage);
	mrsync_reg reg;
	EXPECT_EQ(mrsync_get(nullptr, buf.at(0), 64, 0, &reg), -EINVAL);
	EXPECT_NE(last().find("ctx"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), 64, 0, nullptr), -EINVAL);
	EXPECT_NE(last().find("out"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, nullptr, 64, 0, &reg), -EINVAL);
	EXPECT_NE(last().find("addr"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), 0, 0, &reg), -EINVAL);
	EXPECT_NE(last().find("len"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), SIZE_MAX - 10, 0, &reg), -EINVAL);
	EXPECT_NE(last().find("wraps"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, reinterpret_cast<void *>(1ull << 50), 64, 0, &reg), -EINVAL);
	EXPECT_NE(last().find("47-bit"), std::string::npos);
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), 64, 1u << 9, &reg), -EINVAL);
	EXPECT_NE(last().find("access"), std::string::npos);
	/* Oversized: far more than is mapped there, still inside the 47-bit
	 * user space wherever the mapping landed (ASan maps high). */
	const auto at = reinterpret_cast<std::uint64_t>(buf.at(0));
	const std::uint64_t huge = std::min<std::uint64_t>(1ull << 36, (1ull << 47) - at - kPage);
	ASSERT_GT(huge, 64 * kPage);
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), huge, 0, &reg), -EFAULT);
	EXPECT_NE(last().find("not mapped"), std::string::npos);
}

TEST_F(BadCalls, GetOfUnmappedOrProtectedMemory)
{
	void *hole = mmap(nullptr, 4 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(hole, MAP_FAILED);
	mrsync_reg reg;
	EXPECT_EQ(mrsync_get(ctx_, hole, 64, 0, &reg), -EFAULT) << "PROT_NONE";
	ASSERT_EQ(munmap(hole, 4 * kPage), 0);
	EXPECT_EQ(mrsync_get(ctx_, hole, 64, 0, &reg), -EFAULT) << "unmapped";
	EXPECT_NE(last().find("not mapped"), std::string::npos);
	EXPECT_EQ(mrsync_hint(ctx_, hole, 4 * kPage, 0), -EFAULT);
	EXPECT_EQ(mrsync_hint(nullptr, hole, 4 * kPage, 0), -EINVAL);
}

TEST_F(BadCalls, PutNotifyStatsWithBadArguments)
{
	mrsync_reg bogus{};
	EXPECT_EQ(mrsync_put(ctx_, nullptr), -EINVAL);
	EXPECT_EQ(mrsync_put(ctx_, &bogus), -EINVAL);
	int local;
	bogus.region = reinterpret_cast<mrsync_region *>(&local);
	EXPECT_EQ(mrsync_put(ctx_, &bogus), -EINVAL);
	EXPECT_NE(last().find("not handed out by this context"), std::string::npos);
	EXPECT_EQ(mrsync_put(nullptr, &bogus), -EINVAL);

	Mapping buf(kPage);
	EXPECT_EQ(mrsync_notify_unmap(ctx_, buf.at(0), kPage), -ENOTSUP) << "no manual source";
	EXPECT_NE(last().find("MRSYNC_SOURCE_MANUAL"), std::string::npos);
	EXPECT_EQ(mrsync_notify_unmap(ctx_, buf.at(0), 0), -EINVAL);
	EXPECT_EQ(mrsync_notify_unmap(nullptr, buf.at(0), 1), -EINVAL);
	EXPECT_EQ(mrsync_get_stats(ctx_, nullptr, sizeof(mrsync_stats)), -EINVAL);
	EXPECT_EQ(mrsync_get_stats(nullptr, nullptr, sizeof(mrsync_stats)), -EINVAL);
	EXPECT_EQ(mrsync_resync(nullptr), -EINVAL);
	EXPECT_EQ(mrsync_compact(nullptr), -EINVAL);
	EXPECT_EQ(mrsync_driver_name(nullptr), nullptr);
	EXPECT_STREQ(mrsync_driver_name(ctx_), "uring");
}

TEST_F(BadCalls, AGoodCallAfterBadOnesWorksAndItsRegionIsAccounted)
{
	Mapping buf(4 * kPage);
	mrsync_reg reg;
	EXPECT_EQ(mrsync_get(ctx_, buf.at(0), 0, 0, &reg), -EINVAL);
	ASSERT_EQ(mrsync_get(ctx_, buf.at(0), 4 * kPage, MRSYNC_ACCESS_LOCAL_WRITE, &reg), 0)
		<< last();
	EXPECT_EQ(reg.addr, reinterpret_cast<std::uint64_t>(buf.at(0)));
	EXPECT_EQ(reg.length, 4 * kPage);
	EXPECT_NE(reg.lkey, 0u);
	EXPECT_EQ(mrsync_put(ctx_, &reg), 0);
	expected_regions_ = 1;
}

} // namespace
} // namespace mrsync::test

namespace mrsync::test {
namespace {

/* An unprivileged process over its RLIMIT_MEMLOCK gets -ENOMEM and a message
 * that names the limit and how to raise it; the context stays usable. */
int memlock_child()
{
	if (!limit_memlock_as_own_user(1 << 20))
		return 10;
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.sources = MRSYNC_SOURCE_UFFD;
	mrsync_ctx *ctx = nullptr;
	/* A ring of an earlier child (--gtest_repeat) is torn down by a kernel
	 * worker after that child exits, and its pins stay charged to the user
	 * until then: give it a moment. */
	int rc = -ENOMEM;
	for (int tries = 0; tries < 200 && rc == -ENOMEM; ++tries) {
		rc = mrsync_ctx_create(&p, &ctx);
		if (rc == -ENOMEM)
			usleep(10000);
	}
	if (rc != 0) {
		std::fprintf(stderr, "memlock child: %s\n", mrsync_last_error());
		return 11;
	}
	Mapping big(4u << 20);
	mrsync_reg reg;
	if (mrsync_get(ctx, big.at(0), big.size(), 0, &reg) != -ENOMEM)
		return 12;
	const std::string msg = mrsync_last_error();
	if (msg.find("RLIMIT_MEMLOCK") == std::string::npos || msg.find("ulimit -l") == std::string::npos)
		return 13;
	mrsync_stats s{};
	mrsync_get_stats(ctx, &s, sizeof s);
	if (s.regions != 0 || s.pinned_bytes != 0)
		return 14; /* the failed call kept something */
	if (mrsync_get(ctx, big.at(0), 64 * 1024, 0, &reg) != 0 || mrsync_put(ctx, &reg) != 0)
		return 15; /* a small one still fits */
	mrsync_ctx_destroy(&ctx);
	return 0;
}

TEST(BadInput, MemlockLimitIsNamedWithTheWayToRaiseIt)
{
	const pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(memlock_child());
	int status = 0;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0) << "child check " << WEXITSTATUS(status) << " failed";
}

} // namespace
} // namespace mrsync::test
