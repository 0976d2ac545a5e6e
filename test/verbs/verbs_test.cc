// The verbs driver on Soft-RoCE (rxe0 on a veth, in the QEMU guest): the
// stale-registration bug with real RDMA WRITEs, and mrsync keeping them
// correct with the kernel module or userfaultfd as the source.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <random>

#include <mrsync/mrsync.hpp>
#include <mrsync/verbs.h>

#include "pages.hpp"
#include "rdma_loopback.hpp"

namespace mrsync::test {
namespace {

class Verbs : public ::testing::Test {
protected:
	void SetUp() override { ASSERT_TRUE(rdma_.ok()) << rdma_.error(); }

	Context context(std::uint32_t sources, std::uint32_t flags = 0, bool quiesce = true)
	{
		vp_.pd = rdma_.pd();
		vp_.quiesce = quiesce ? &Loopback::quiesce : nullptr;
		vp_.quiesce_arg = &rdma_;
		mrsync_params p = MRSYNC_PARAMS_INIT;
		p.driver = "verbs";
		p.driver_arg = &vp_;
		p.sources = sources;
		p.flags = flags;
		p.on_key_change = [](void *arg, const mrsync_key_change *c) {
			static_cast<std::vector<mrsync_key_change> *>(arg)->push_back(*c);
		};
		p.on_key_change_arg = &changes_;
		auto ctx = Context::create(p);
		EXPECT_TRUE(ctx.ok()) << ctx.error().message;
		return std::move(ctx).value();
	}

	/* A WRITE through a fresh lookup; true if the application sees it. */
	bool write_through(Context &ctx, const char *va, std::size_t len, unsigned seed)
	{
		auto reg = ctx.get(va, len);
		if (!reg) {
			ADD_FAILURE() << "get: " << reg.error().message;
			return false;
		}
		const auto data = pattern(len, seed);
		return rdma_.write(reg->rkey(), va, data) && sees(va, data);
	}

	Loopback rdma_;
	mrsync_verbs_params vp_ = MRSYNC_VERBS_PARAMS_INIT;
	std::vector<mrsync_key_change> changes_;
};

TEST_F(Verbs, NaiveCacheLosesTheWriteAfterMapFixed)
{
	Pages buf(2);
	ibv_mr *mr = ibv_reg_mr(rdma_.pd(), buf.base, buf.len,
				IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	ASSERT_NE(mr, nullptr);
	buf.remap(0, 2);
	const auto data = pattern(256, 1);
	/* The NIC accepts it: the MR still pins the old pages. */
	EXPECT_TRUE(rdma_.write(mr->rkey, buf.base, data));
	EXPECT_FALSE(sees(buf.base, data)) << "the write should have gone to the old page";
	ibv_dereg_mr(mr);
}

class VerbsSources : public Verbs, public ::testing::WithParamInterface<std::uint32_t> {};

TEST_P(VerbsSources, MrsyncDeliversTheWriteAfterMapFixed)
{
	Context ctx = context(GetParam());
	Pages buf(4);
	ASSERT_TRUE(write_through(ctx, buf.base, 4 * kPage, 1));
	buf.remap(1);
	EXPECT_TRUE(write_through(ctx, buf.base + kPage, 512, 2)) << "write lost after remap";
	EXPECT_TRUE(write_through(ctx, buf.base, 4 * kPage, 3));
	EXPECT_GE(ctx.stats().resyncs, 1u);
	mrsync_verbs_stats vs{};
	ASSERT_EQ(mrsync_verbs_get_stats(ctx.c_handle(), &vs, sizeof vs), 0);
	EXPECT_EQ(vs.can_rereg, 0u) << "rxe on 6.1 has no rereg; did that change?";
	EXPECT_GE(vs.reg_dereg, 1u);
	EXPECT_EQ(vs.retired_mrs, 0u) << "the quiesce callback should have released them";
}

TEST_P(VerbsSources, NegativeControlWithoutTheGenerationCheckLosesIt)
{
	Context ctx = context(GetParam(), MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	Pages buf(4);
	ASSERT_TRUE(write_through(ctx, buf.base, 4 * kPage, 1));
	buf.remap(1);
	EXPECT_FALSE(write_through(ctx, buf.base + kPage, 512, 2))
		<< "with the generation check off the write should be lost";
}

INSTANTIATE_TEST_SUITE_P(Rxe, VerbsSources,
			 ::testing::Values(std::uint32_t(MRSYNC_SOURCE_KMOD),
					   std::uint32_t(MRSYNC_SOURCE_UFFD)),
			 [](const auto &info) {
				 return info.param == MRSYNC_SOURCE_KMOD ? "kmod" : "uffd";
			 });

TEST_F(Verbs, RdmaReadOfARemappedBufferReturnsTheNewContents)
{
	Context ctx = context(MRSYNC_SOURCE_KMOD);
	Pages buf(2);
	{
		auto reg = ctx.get(buf.base, buf.len);
		ASSERT_TRUE(reg.ok());
	}
	buf.remap(0);
	const auto fresh = pattern(kPage, 9);
	std::memcpy(buf.base, fresh.data(), kPage);
	auto reg = ctx.get(buf.base, kPage);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	std::size_t at = 0;
	ASSERT_TRUE(rdma_.post_read(reg->rkey(), buf.base, kPage, at));
	ASSERT_EQ(rdma_.drain(), 0);
	EXPECT_TRUE(sees(rdma_.scratch(at), fresh)) << "RDMA READ returned the old page";
}

TEST_F(Verbs, WritesInFlightToUntouchedPagesSurviveAResyncAndTheAppIsToldTheNewKeys)
{
	Context ctx = context(MRSYNC_SOURCE_KMOD);
	Pages buf(8);
	auto reg = ctx.get(buf.base, buf.len);
	ASSERT_TRUE(reg.ok());
	const std::uint32_t old_rkey = reg->rkey();
	std::vector<std::vector<char>> sent;
	for (unsigned i = 0; i < 64; ++i) { /* pages 0-3, not waited for */
		sent.push_back(pattern(256, 100 + i));
		ASSERT_TRUE(rdma_.post_write(old_rkey, buf.base + (i % 4) * kPage + (i / 4) * 256,
					     sent.back()));
	}
	reg->reset();
	buf.remap(7);
	auto after = ctx.get(buf.base + 7 * kPage, 64); /* resync: new MR, fence, old MR goes */
	ASSERT_TRUE(after.ok()) << after.error().message;
	EXPECT_EQ(rdma_.outstanding(), 0) << "the fence must have waited for them";
	EXPECT_EQ(rdma_.drain(), 0);
	for (unsigned i = 0; i < 64; ++i)
		EXPECT_TRUE(sees(buf.base + (i % 4) * kPage + (i / 4) * 256, sent[i])) << i;

	ASSERT_FALSE(changes_.empty()) << "keys changed without telling the application";
	EXPECT_EQ(changes_.back().new_rkey, after->rkey());
	EXPECT_NE(after->rkey(), old_rkey);
	EXPECT_EQ(ctx.stats().key_changes, changes_.size());
	/* The old MR is gone: a straggler with the old rkey fails, it does not
	 * land in the old page. */
	EXPECT_FALSE(rdma_.write(old_rkey, buf.base, pattern(64, 7)));
	EXPECT_NE(rdma_.last_status(), IBV_WC_SUCCESS);
}

TEST_F(Verbs, WithoutQuiesceRetiredMrsWaitForTheApplicationsWord)
{
	Context ctx = context(MRSYNC_SOURCE_KMOD, 0, /*quiesce=*/false);
	Pages buf(2);
	ASSERT_TRUE(write_through(ctx, buf.base, buf.len, 1));
	buf.remap(1);
	ASSERT_TRUE(write_through(ctx, buf.base, buf.len, 2));
	mrsync_verbs_stats vs{};
	ASSERT_EQ(mrsync_verbs_get_stats(ctx.c_handle(), &vs, sizeof vs), 0);
	EXPECT_GE(vs.retired_mrs, 1u) << "replaced MRs must wait without a quiesce callback";
	EXPECT_EQ(mrsync_verbs_quiesced(ctx.c_handle()), int(vs.retired_mrs));
	ASSERT_EQ(mrsync_verbs_get_stats(ctx.c_handle(), &vs, sizeof vs), 0);
	EXPECT_EQ(vs.retired_mrs, 0u);
}

/* The core's torture in short, with real RDMA WRITEs as the DMA. */
int torture(Verbs &t, Context &ctx, Loopback &rdma, int ops)
{
	constexpr std::size_t kPages = 16;
	Pages buf(kPages);
	std::mt19937 rng(42);
	int lost = 0;
	for (int i = 0; i < ops; ++i) {
		const std::size_t p = rng() % kPages, n = 1 + rng() % 3;
		if (rng() % 3 == 0)
			buf.remap(std::min(p, kPages - n), n);
		const std::size_t at = rng() % kPages;
		auto reg = ctx.get(buf.base, buf.len); /* the whole area, as an app caches it */
		if (!reg) {
			ADD_FAILURE() << reg.error().message;
			return -1;
		}
		const auto data = pattern(128, unsigned(i));
		char *va = buf.base + at * kPage + (i % 8) * 128;
		if (!rdma.write(reg->rkey(), va, data) || !sees(va, data))
			++lost;
	}
	(void)t;
	return lost;
}

TEST_F(Verbs, ShortTortureWithRealRdmaWritesLosesNothing)
{
	Context ctx = context(MRSYNC_SOURCE_KMOD);
	EXPECT_EQ(torture(*this, ctx, rdma_, 400), 0);
	EXPECT_GT(ctx.stats().resyncs, 10u);
}

TEST_F(Verbs, ShortTortureNegativeControlLosesWrites)
{
	Context ctx = context(MRSYNC_SOURCE_KMOD, MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK);
	EXPECT_GT(torture(*this, ctx, rdma_, 200), 0);
}

TEST_F(Verbs, BadDriverArgumentIsNamed)
{
	mrsync_verbs_params bad = MRSYNC_VERBS_PARAMS_INIT;
	bad.struct_size = 1;
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "verbs";
	p.driver_arg = &bad;
	p.sources = MRSYNC_SOURCE_MANUAL;
	mrsync_ctx *ctx = nullptr;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -EINVAL);
	EXPECT_NE(std::string(mrsync_last_error()).find("struct_size"), std::string::npos);
	mrsync_verbs_params unknown = MRSYNC_VERBS_PARAMS_INIT;
	unknown.device = "no-such-device";
	p.driver_arg = &unknown;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -ENODEV);
	EXPECT_NE(std::string(mrsync_last_error()).find("no-such-device"), std::string::npos);
	EXPECT_EQ(mrsync_verbs_quiesced(nullptr), -EINVAL);
}

} // namespace
} // namespace mrsync::test

int main(int argc, char **argv)
{
	if (access("/dev/infiniband/uverbs0", F_OK) != 0 || access("/dev/mrsync", F_OK) != 0) {
		if (std::getenv("MRSYNC_VM_GUEST")) {
			std::fprintf(stderr, "%s: no RDMA device or /dev/mrsync in the guest: the "
					     "Soft-RoCE setup failed\n", argv[0]);
			return 1;
		}
		std::fprintf(stderr, "%s: skipped: no RDMA device (runs on Soft-RoCE in the QEMU "
				     "guest: test/vm/run)\n", argv[0]);
		return 77;
	}
	::testing::InitGoogleTest(&argc, argv);
	return RUN_ALL_TESTS();
}
