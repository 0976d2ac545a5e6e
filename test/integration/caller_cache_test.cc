// What a cache in front of mrsync_get() relies on: mrsync_generation() moves
// on every change a source reports and stays put otherwise, and a driver that
// cannot keep keys across a resync gets its new keys announced through
// on_key_change.
#include <sys/mman.h>

#include <vector>

#include <mrsync/generation.h>

#include "support/forwarding_driver.hpp"
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

TEST(CallerCache, GenerationIsStableAcrossHitsAndMovesOnEveryChange)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	const std::uint64_t before = mrsync_generation(ctx.c_handle());
	for (int i = 0; i < 100; ++i) {
		auto reg = ctx.get(m.at(0), 4 * kPage);
		ASSERT_TRUE(reg.ok()) << reg.error().message;
	}
	EXPECT_EQ(mrsync_generation(ctx.c_handle()), before) << "hits must not move it";

	ASSERT_TRUE(remap_fresh(m.at(kPage), kPage));
	const std::uint64_t after_remap = mrsync_generation(ctx.c_handle());
	EXPECT_NE(after_remap, before) << "munmap under a registration was not reported";

	/* A resync consumes the events but the generation, a sum of counters
	 * that only grow, never goes back to a value a caller cached. (The
	 * userfaultfd monitor bumps it once more when it publishes the ranges,
	 * which may happen after the remap and even the resync returned, so
	 * after_remap is a lower bound, not the final value.) */
	ASSERT_TRUE(ctx.resync().ok());
	EXPECT_GE(mrsync_generation(ctx.c_handle()), after_remap);
	EXPECT_EQ(mrsync_generation(nullptr), 0u);

	/* The words a caller inlines (mrsync_gen_begin, as mrsync.h says) add
	 * up to the same value: the source's, then the context's own, which
	 * stays 0 until a fork. */
	const std::uint64_t *words[4];
	const int n = mrsync_generation_words(ctx.c_handle(), words, 4);
	ASSERT_EQ(n, 2);
	EXPECT_EQ(__atomic_load_n(words[1], __ATOMIC_ACQUIRE), 0u);
	const std::uint64_t low = mrsync_generation(ctx.c_handle());
	const std::uint64_t sum = mrsync_gen_begin(words, std::uint32_t(n));
	EXPECT_LE(low, sum);
	EXPECT_LE(sum, mrsync_generation(ctx.c_handle()));
	EXPECT_GE(sum, after_remap);
	EXPECT_EQ(mrsync_generation_words(ctx.c_handle(), nullptr, 4), -EINVAL);
}

TEST(CallerCache, ForEachRegionReportsLiveRegistrationsAndTheirHoles)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_MANUAL);
	mrsync_reg held{};
	{
		auto reg = ctx.get(m.at(0), 4 * kPage);
		ASSERT_TRUE(reg.ok());
		held = reg->raw();
	}
	ASSERT_TRUE(ctx.notify_unmap(m.at(kPage), kPage).ok());
	ASSERT_TRUE(ctx.resync().ok());
	std::vector<mrsync_region_info> seen;
	const int n = mrsync_for_each_region(
		ctx.c_handle(),
		[](void *arg, const mrsync_region_info *info) {
			static_cast<std::vector<mrsync_region_info> *>(arg)->push_back(*info);
		},
		&seen);
	ASSERT_EQ(n, 1);
	ASSERT_EQ(seen.size(), 1u);
	EXPECT_EQ(seen[0].addr, held.addr);
	EXPECT_EQ(seen[0].length, held.length);
	EXPECT_EQ(seen[0].lkey, held.lkey);
	EXPECT_EQ(seen[0].invalid_bytes, kPage);
	EXPECT_EQ(mrsync_for_each_region(ctx.c_handle(), nullptr, nullptr), -EINVAL);
}

TEST(CallerCache, ManualNotificationsMoveTheGeneration)
{
	Mapping m(kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_MANUAL);
	auto reg = ctx.get(m.at(0), kPage);
	ASSERT_TRUE(reg.ok());
	const std::uint64_t before = mrsync_generation(ctx.c_handle());
	ASSERT_TRUE(ctx.notify_unmap(m.at(0), kPage).ok());
	EXPECT_GT(mrsync_generation(ctx.c_handle()), before);
}

/* FAKE: no real device here changes keys on a resync (rxe in the QEMU guest
 * does, through drivers/verbs), so this wraps the uring driver and hands out
 * a new key on every map(), to check what the core does with it. */
class FakeRekeyDriver final : public ForwardingDriver {
public:
	FakeRekeyDriver(std::unique_ptr<Driver> inner, bool holes_ok)
		: ForwardingDriver(std::move(inner)), holes_ok_(holes_ok)
	{
	}
	std::string_view name() const noexcept override
	{
		return holes_ok_ ? "fake_rekey" : "fake_rekey_dense";
	}
	DriverCaps caps() const noexcept override
	{
		DriverCaps c = ForwardingDriver::caps();
		c.keys_survive_map = false;
		c.holes_ok = holes_ok_; /* false: like verbs, one MR over the area */
		return c;
	}
	Result<Keys> map(Keys keys, std::span<const Extent> t) override
	{
		/* The top bit flips on every map; the inner driver sees its own keys. */
		auto mapped = inner().map(strip(keys), t);
		if (!mapped)
			return mapped;
		const std::uint32_t flip = (keys.lkey & kFlip) ^ kFlip;
		return Keys{mapped->lkey | flip, mapped->rkey | flip};
	}
	/* Every map rekeys, the incremental one too. */
	Result<Keys> map_changed(Keys keys, std::span<const Extent> t,
				 std::span<const Range>) override
	{
		return map(keys, t);
	}
	void destroy(Keys keys) noexcept override { inner().destroy(strip(keys)); }

private:
	static constexpr std::uint32_t kFlip = 0x80000000u;
	static Keys strip(Keys k) { return {k.lkey & ~kFlip, k.rkey & ~kFlip}; }
	bool holes_ok_;
};

template <bool HolesOk>
Result<std::unique_ptr<Driver>> create_fake(const DriverConfig &config)
{
	auto inner = find_driver("uring")->create(config);
	if (!inner)
		return std::move(inner).error();
	return std::unique_ptr<Driver>(
		std::make_unique<FakeRekeyDriver>(std::move(*inner), HolesOk));
}

const DriverFactory fake_rekey_factory{
	.name = "fake_rekey",
	.available = [](std::string &) { return true; },
	.create = create_fake<true>,
};
const DriverFactory fake_dense_factory{
	.name = "fake_rekey_dense",
	.available = [](std::string &) { return true; },
	.create = create_fake<false>,
};
MRSYNC_REGISTER_DRIVER(fake_rekey_factory)
MRSYNC_REGISTER_DRIVER(fake_dense_factory)

/* A driver whose registrations serve nothing while they have a hole (verbs):
 * a lookup of an intact page must not hit a region with a hole elsewhere; it
 * re-pins the hole (the manual source reports changes once they are done:
 * nothing there is still changing), and if the hole stays unmapped, a new
 * registration serves the request. */
TEST(CallerCache, DriversWithoutHolesGetWholeRegistrationsBack)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_MANUAL;
	params.driver = "fake_rekey_dense";
	auto created = Context::create(params);
	ASSERT_TRUE(created.ok()) << created.error().message;
	Context ctx = std::move(created).value();
	{
		auto reg = ctx.get(m.at(0), 4 * kPage);
		ASSERT_TRUE(reg.ok());
	}
	ASSERT_TRUE(remap_fresh(m.at(2 * kPage), kPage));
	ASSERT_TRUE(ctx.notify_unmap(m.at(2 * kPage), kPage).ok());
	ASSERT_TRUE(ctx.resync().ok());
	const auto before = ctx.stats();
	EXPECT_EQ(before.invalid_bytes, kPage);
	auto page0 = ctx.get(m.at(0), 64); /* page 0 is intact, page 2 is a hole */
	ASSERT_TRUE(page0.ok()) << page0.error().message;
	const auto after = ctx.stats();
	EXPECT_EQ(after.hits, before.hits) << "a region with a hole must not hit";
	EXPECT_EQ(after.invalid_bytes, 0u) << "the hole elsewhere was not re-pinned";
	EXPECT_EQ(page0->length(), 4 * kPage) << "the whole registration comes back";
	page0.value().reset();

	/* Unmapped for good: page 0 still gets a (new) registration. */
	ASSERT_EQ(munmap(m.at(3 * kPage), kPage), 0);
	ASSERT_TRUE(ctx.notify_unmap(m.at(3 * kPage), kPage).ok());
	auto again = ctx.get(m.at(0), 64);
	ASSERT_TRUE(again.ok()) << again.error().message;
	EXPECT_LE(again->addr() + again->length(), reinterpret_cast<std::uint64_t>(m.at(3 * kPage)));
	EXPECT_EQ(ctx.stats().invalid_bytes, 0u);
}

TEST(CallerCache, KeyChangesAreAnnouncedWithOldAndNewKeys)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	std::vector<mrsync_key_change> seen;
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_MANUAL;
	params.driver = "fake_rekey";
	params.on_key_change = [](void *arg, const mrsync_key_change *change) {
		static_cast<std::vector<mrsync_key_change> *>(arg)->push_back(*change);
	};
	params.on_key_change_arg = &seen;
	auto created = Context::create(params);
	ASSERT_TRUE(created.ok()) << created.error().message;
	Context ctx = std::move(created).value();

	mrsync_reg first{};
	{
		auto reg = ctx.get(m.at(0), 4 * kPage);
		ASSERT_TRUE(reg.ok()) << reg.error().message;
		first = reg->raw();
	}
	ASSERT_TRUE(remap_fresh(m.at(kPage), kPage));
	ASSERT_TRUE(ctx.notify_unmap(m.at(kPage), kPage).ok());
	auto again = ctx.get(m.at(0), 4 * kPage);
	ASSERT_TRUE(again.ok()) << again.error().message;

	const mrsync_stats stats = ctx.stats();
	ASSERT_FALSE(seen.empty()) << "the resync changed keys but nobody was told; resyncs "
				   << stats.resyncs << " key_changes " << stats.key_changes
				   << " invalidated " << stats.entries_invalidated;
	const mrsync_key_change &last = seen.back();
	EXPECT_EQ(last.addr, first.addr);
	EXPECT_EQ(last.length, first.length);
	EXPECT_EQ(seen.front().old_lkey, first.lkey);
	EXPECT_EQ(seen.front().old_rkey, first.rkey);
	EXPECT_EQ(last.new_lkey, again->lkey());
	EXPECT_EQ(last.new_rkey, again->rkey());
	/* One change when the page was invalidated, one when the lookup
	 * re-pinned it: each announces the keys the previous one gave out. */
	EXPECT_EQ(seen.size(), 2u);
	for (std::size_t i = 1; i < seen.size(); ++i) {
		EXPECT_EQ(seen[i].old_lkey, seen[i - 1].new_lkey);
		EXPECT_EQ(seen[i].old_rkey, seen[i - 1].new_rkey);
	}
	EXPECT_EQ(ctx.stats().key_changes, seen.size());
}

} // namespace
} // namespace mrsync::test
