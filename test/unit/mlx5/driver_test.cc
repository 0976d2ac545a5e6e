/* SPDX-License-Identifier: MIT */
/* The mlx5 driver under the core (driver "mlx5-model"): a context with the
 * manual source, real pages remapped under registrations, and RDMA WRITEs
 * from a peer through the rkey, packet by packet, into the model's pinned
 * leaves. The verbs suite's scenarios (test/verbs), on the model. */
#include <atomic>
#include <cstdio>
#include <thread>

#include <mrsync/mrsync.hpp>
#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_NO_REVOKE */

#include "mlx5_test_util.hpp"
#include "model_driver.hpp"

namespace mrsync::mlx5::test {
namespace {

constexpr std::size_t kPages = 256;           /* 1 MiB */
constexpr std::uint64_t kWindow = 16 * kPage; /* 16 windows: small pins, the memlock limit is low */

class DriverTest : public ::testing::Test {
public: /* stream_during_resyncs() drives it too */
	void SetUp() override
	{
		std::string why;
		if (!uring::Hca::available(why))
			GTEST_SKIP() << "io_uring unavailable: " << why;
		arg.driver.min_window = kWindow;
		arg.driver.fence_timeout = std::chrono::milliseconds(10'000);
	}
	std::uint32_t ctx_flags = 0;
	void open()
	{
		mrsync_params params = MRSYNC_PARAMS_INIT;
		params.flags = ctx_flags;
		params.driver = "mlx5-model";
		params.driver_arg = &arg;
		params.sources = MRSYNC_SOURCE_MANUAL;
		auto c = Context::create(params);
		ASSERT_TRUE(c) << c.error().message;
		ctx.emplace(std::move(c).value());
		ASSERT_TRUE(buf.ok());
	}
	Mlx5Model &model() { return model_of(ctx->c_handle()); }
	Mlx5Driver &driver() { return driver_of_model_ctx(ctx->c_handle()); }
	Keys keys()
	{
		auto r = ctx->get(buf.at(0), kPages * kPage);
		EXPECT_TRUE(r) << r.error().message;
		return r ? Keys{r->lkey(), r->rkey()} : Keys{};
	}
	/** The application replaces page i and tells mrsync; the next get resyncs. */
	void change(std::size_t i)
	{
		ASSERT_TRUE(buf.remap(i));
		ASSERT_TRUE(ctx->notify_unmap(buf.at(i), kPage));
	}
	int write(std::uint32_t rkey, std::size_t page, std::size_t off, std::span<const std::byte> b)
	{
		PeerQp qp;
		return model().rdma_write(qp, rkey, buf.va(page) + off, b);
	}
	bool any_violation(const char *what)
	{
		for (const auto &v : model().violations())
			if (v.find(what) != std::string::npos)
				return true;
		return false;
	}

	ModelDriverArg arg;
	Pages buf{kPages};
	std::optional<Context> ctx;
};

TEST_F(DriverTest, AOnePageChangeIsOneChildUmrAndTheKeysStay)
{
	open();
	const Keys k = keys();
	ASSERT_NE(k.rkey, 0u);
	const DriverStats before = driver().stats();
	change(100);
	const Keys after = keys(); /* the resync, then the re-pin of page 100 */
	EXPECT_EQ(after, k);
	const DriverStats d = driver().stats();
	/* Invalidate the page (one child UMR), then map its new pin (another):
	 * the parent and the 15 other children untouched. */
	EXPECT_EQ(d.umrs - before.umrs, 2u);
	EXPECT_LE(d.umr_klms - before.umr_klms, 2u * 3);
	const auto data = pattern(3 * kPage, 11); /* across the changed page */
	EXPECT_EQ(write(k.rkey, 99, 0, data), kWcSuccess);
	EXPECT_TRUE(same({buf.at(99), data.size()}, data)) << "a write through the old key was lost";
	EXPECT_EQ(ctx->stats().key_changes, 0u);
	EXPECT_TRUE(model().violations().empty()) << model().violations()[0];
}

/* While resyncs rewrite window 6, a peer streams writes to windows 0 and 7:
 * every one completes and lands (the verbs driver refuses them or changes
 * the key). Negative control: a driver that revokes the whole key on map,
 * as ibv_rereg_mr does on mlx5, fails some. */
void stream_during_resyncs(DriverTest &t, std::uint64_t &ok, std::uint64_t &refused, bool &lost)
{
	const Keys k = t.keys();
	std::atomic<bool> stop{false}, bad{false};
	std::atomic<std::uint64_t> good{0}, failed{0};
	std::thread peer([&] {
		PeerQp qp;
		for (unsigned i = 0; !stop.load(); ++i) {
			const std::size_t page = (i % 2 ? 0 : 7 * 16) + i % 16;
			const auto data = pattern(2 * kPage, i);
			const int st = t.model().rdma_write(qp, k.rkey, t.buf.va(page), data);
			if (st == kWcSuccess) {
				++good;
				if (!same({t.buf.at(page), data.size()}, data))
					bad = true;
			} else {
				++failed;
				qp.error = false; /* reset the requester to RTS */
			}
		}
	});
	/* Each resync starts while the peer is writing: wait for its progress. */
	auto progressed = [&](std::uint64_t since) {
		for (int spin = 0; spin < 100000 && good + failed < since + 2; ++spin)
			std::this_thread::yield();
	};
	for (int round = 0; round < 60; ++round) {
		progressed(good + failed);
		t.change(6 * 16 + round % 16);
		EXPECT_EQ(t.keys(), k);
	}
	stop = true;
	peer.join();
	ok = good;
	refused = failed;
	lost = bad;
	std::printf("peer: %llu writes landed, %llu refused, during 60 resyncs\n",
		    (unsigned long long)ok, (unsigned long long)refused);
}

TEST_F(DriverTest, InFlightWritesToUntouchedPagesCompleteDuringResyncs)
{
	arg.model.apply_percent = 10;
	open();
	std::uint64_t ok = 0, refused = 0;
	bool lost = false;
	stream_during_resyncs(*this, ok, refused, lost);
	EXPECT_GT(ok, 0u);
	EXPECT_EQ(refused, 0u);
	EXPECT_FALSE(lost);
	EXPECT_EQ(ctx->stats().key_changes, 0u);
	EXPECT_TRUE(model().violations().empty());
}

TEST_F(DriverTest, NegativeControlRevokingTheKeyOnMapRefusesInFlightWrites)
{
	arg.driver.test_revoke_on_map = true;
	arg.model.apply_percent = 10;
	open();
	std::uint64_t ok = 0, refused = 0;
	bool lost = false;
	stream_during_resyncs(*this, ok, refused, lost);
	EXPECT_GT(refused, 0u) << ok << " writes, none refused: the test cannot see a revoke";
}

/* UMR failures (the key left as it was, or free): the fence drains,
 * resets the QP and re-posts; nothing is lost or misdirected. */
TEST_F(DriverTest, UmrFailuresAreRecovered)
{
	open();
	const Keys k = keys();
	int round = 0;
	for (FaultMode mode : {FaultMode::KeepKey, FaultMode::FreeKey}) {
		model().inject_umr_failures(1, mode);
		change(200 + round);
		ASSERT_EQ(keys(), k);
		for (std::size_t page : {std::size_t(200 + round), std::size_t(3)}) {
			const auto data = pattern(kPage, unsigned(page));
			EXPECT_EQ(write(k.rkey, page, 0, data), kWcSuccess) << "page " << page;
			EXPECT_TRUE(same(buf.page(page), data)) << "page " << page;
		}
		++round;
	}
	EXPECT_EQ(driver().stats().recoveries, 2u);
	EXPECT_EQ(model().stats().umr_errors, 2u);
	EXPECT_EQ(ctx->stats().key_changes, 0u);
	EXPECT_TRUE(model().violations().empty());
}

/* Negative control: a fence that does not wait for the UMR completions
 * lets the core deregister chunks a key still names. The model catches it. */
TEST_F(DriverTest, NegativeControlAFenceWithoutTheCompletionIsCaught)
{
	arg.driver.test_no_fence_wait = true;
	arg.model.apply_percent = 5;
	open();
	(void)keys();
	/* Every page changes: the chunk MR loses its last entry and is unpinned
	 * right after the (non-)fence, while the UMRs dropping it are pending. */
	for (int round = 0; round < 8 && !any_violation("dereg before"); ++round) {
		for (std::size_t i = 0; i < kPages; ++i)
			ASSERT_TRUE(buf.remap(i));
		ASSERT_TRUE(ctx->notify_unmap(buf.at(0), kPages * kPage));
		(void)keys();
	}
	EXPECT_TRUE(any_violation("dereg before"));
}

/* Negative control: raw WQEs without INITIATOR_SMALL_FENCE. */
TEST_F(DriverTest, NegativeControlAMissingFenceBitIsCaught)
{
	arg.driver.test_no_small_fence = true;
	open();
	(void)keys(); /* children, then the parent: the parent lacks the bit */
	EXPECT_TRUE(any_violation("INITIATOR_SMALL_FENCE"));
}

TEST_F(DriverTest, AnUnmappedRegistrationRefusesDma)
{
	open();
	const Keys k = keys();
	ASSERT_TRUE(ctx->notify_unmap(buf.at(0), kPages * kPage));
	ASSERT_TRUE(ctx->resync());
	/* Every entry a hole (the poison key): DMA through the key fails. */
	EXPECT_EQ(write(k.rkey, 0, 0, pattern(64, 1)), kWcRemAccessErr);
	EXPECT_TRUE(model().violations().empty());
}

/* Page-granular churn inside one window (issue 12): the 1 MiB registration
 * is one window; every other page is replaced, one at a time, each followed
 * by a lookup and a peer's RDMA WRITE across it through the rkey the peer got
 * at the start. Each replaced page splits its chunk (two KLMs more), so 60
 * pages would need 121 KLMs where one UMR holds 52. */
struct Churn {
	std::size_t landed = 0, refused = 0, lost = 0;
	bool key_moved = false;
};

Churn churn_one_window(DriverTest &t, std::size_t pages)
{
	const Keys k = t.keys();
	Churn c;
	for (std::size_t i = 0; i < pages; ++i) {
		const std::size_t page = 1 + 2 * i;
		t.change(page);
		c.key_moved |= t.keys() != k;
		const auto data = pattern(3 * kPage, unsigned(i)); /* page - 1 .. page + 1 */
		if (t.write(k.rkey, page - 1, 0, data) != kWcSuccess)
			++c.refused;
		else if (same({t.buf.at(page - 1), data.size()}, data))
			++c.landed;
		else
			++c.lost;
	}
	/* Finally all of it, through the same rkey. */
	const auto all = pattern(kPages * kPage, 77);
	if (t.write(k.rkey, 0, 0, all) != kWcSuccess)
		++c.refused;
	else if (!same({t.buf.at(0), all.size()}, all))
		++c.lost;
	std::printf("churn of %zu pages in one window: %zu writes landed, %zu refused, %zu lost; "
		    "the key %s; %llu compactions\n", pages, c.landed, c.refused, c.lost,
		    c.key_moved ? "changed" : "stayed",
		    (unsigned long long)t.ctx->stats().compactions);
	return c;
}

TEST_F(DriverTest, PageChurnInOneWindowIsCoalescedAndTheKeysStay)
{
	arg.driver.min_window = kPages * kPage;
	open();
	const Churn c = churn_one_window(*this, 60);
	EXPECT_EQ(c.landed, 60u);
	EXPECT_EQ(c.refused, 0u);
	EXPECT_EQ(c.lost, 0u);
	EXPECT_FALSE(c.key_moved);
	EXPECT_EQ(ctx->stats().key_changes, 0u);
	EXPECT_GT(ctx->stats().compactions, 0u) << "the window never came under pressure";
	EXPECT_TRUE(model().violations().empty()) << model().violations()[0];
}

/* Negative control: the driver reports no pressure. The window runs out of
 * KLMs, map() fails with ENOSPC, the core retires the registration: a new
 * key, and the peer's writes through the old one are refused -- never lost:
 * the driver revokes a key whose map could not fit. */
TEST_F(DriverTest, NegativeControlWithoutPressureTheChurnChangesTheKey)
{
	arg.driver.min_window = kPages * kPage;
	arg.driver.test_no_pressure = true;
	open();
	const Churn c = churn_one_window(*this, 60);
	EXPECT_TRUE(c.key_moved);
	EXPECT_GT(c.refused, 0u);
	EXPECT_EQ(c.lost, 0u);
	EXPECT_TRUE(model().violations().empty()) << model().violations()[0];
}

/* Negative control of that revoke -- the driver's, and the core's all-invalid
 * map of a registration whose map was refused (updater.cpp, revoke): without
 * both the retired key keeps naming the replaced pages until the core
 * reclaims it, and writes land there. (Either alone is enough: the core's
 * fits in one KLM per window.) */
TEST_F(DriverTest, NegativeControlWithoutTheRevokeAKeyThatCannotMapLosesWrites)
{
	arg.driver.min_window = kPages * kPage;
	arg.driver.test_no_pressure = true;
	arg.driver.test_no_revoke = true;
	ctx_flags = MRSYNC_CTX_F_TEST_NO_REVOKE;
	open();
	const Churn c = churn_one_window(*this, 60);
	EXPECT_GT(c.lost, 0u) << "the test cannot see a write through a stale key";
}

/* The holes_ok = false fallback, for hardware that does not refuse DMA
 * through a free key behind a KLM (model: poison_refused = false). A page is
 * replaced and resynced, and before any lookup re-pins it a peer writes
 * through the rkey, across the hole; then the lookup, and the write again. */
struct Hole {
	int through_hole = -1, untouched = -1, after_lookup = -1;
	bool landed = false, lost = false, key_moved = false;
};

Hole write_through_a_hole(DriverTest &t)
{
	const Keys k = t.keys();
	Hole h;
	t.change(50);
	EXPECT_TRUE(t.ctx->resync());
	const auto data = pattern(3 * kPage, 5); /* pages 49 .. 51, 50 the hole */
	h.through_hole = t.write(k.rkey, 49, 0, data);
	h.lost = h.through_hole == kWcSuccess && !same({t.buf.at(49), data.size()}, data);
	h.untouched = t.write(k.rkey, 200, 0, pattern(kPage, 6));
	h.key_moved = t.keys() != k; /* re-pins the hole */
	const auto again = pattern(3 * kPage, 7);
	h.after_lookup = t.write(k.rkey, 49, 0, again);
	h.landed = h.after_lookup == kWcSuccess && same({t.buf.at(49), again.size()}, again);
	std::printf("write across a hole: %s; to an untouched page meanwhile: %s; after the "
		    "lookup: %s; the key %s\n",
		    h.through_hole != kWcSuccess ? "refused" : h.lost ? "LOST" : "landed",
		    h.untouched == kWcSuccess ? "landed" : "refused", h.landed ? "landed" : "not landed",
		    h.key_moved ? "changed" : "stayed");
	return h;
}

TEST_F(DriverTest, WithoutPoisonRefusalAKeyWithAHoleIsFreeUntilTheLookup)
{
	arg.model.poison_refused = false;
	arg.driver.poison_refused = false;
	open();
	EXPECT_FALSE(driver().caps().holes_ok);
	const Hole h = write_through_a_hole(*this);
	EXPECT_EQ(h.through_hole, kWcRemAccessErr);
	EXPECT_EQ(h.untouched, kWcRemAccessErr); /* the price: the whole key refuses */
	EXPECT_FALSE(h.lost);
	EXPECT_TRUE(h.landed);
	EXPECT_FALSE(h.key_moved);
	EXPECT_EQ(ctx->stats().key_changes, 0u);
	EXPECT_EQ(model().stats().bytes_discarded, 0u);
	EXPECT_TRUE(model().violations().empty()) << model().violations()[0];
}

/* Negative control: the driver trusts the poison key on hardware that
 * discards through it: the write across the hole succeeds, and its page's
 * bytes are gone. */
TEST_F(DriverTest, NegativeControlTrustingThePoisonKeyLosesTheWriteThroughTheHole)
{
	arg.model.poison_refused = false;
	open();
	const Hole h = write_through_a_hole(*this);
	EXPECT_EQ(h.through_hole, kWcSuccess);
	EXPECT_TRUE(h.lost);
	EXPECT_GT(model().stats().bytes_discarded, 0u);
}

} // namespace
} // namespace mrsync::mlx5::test
