// A device that refuses to rewrite a translation (a failed Driver::map or
// create: out of IOMMU entries, a UMR error completion, ENOMEM) keeps its old
// translation, which points at pages the application replaced. The core must
// never hand that registration out again: the contract (driver.hpp) says the
// device kept the old translation and the registration is retired. This drives
// resyncs through a driver that refuses maps and creates now and then, every
// DMA checked by content: no lookup that succeeds may lose its write.
//
// FAKE: no real device here fails a map on demand; FakeFailingMapDriver wraps
// the uring HCA (real pins, real DMA) and refuses every Nth map or create
// before the HCA sees it. Its "lying" mode -- it reports success for every map
// and makes none, so the HCA keeps the replaced pages -- is the negative control:
// the same workload must then lose writes, which shows the check can fail.
#include <sys/mman.h>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <optional>
#include <random>
#include <set>

#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_NO_REVOKE */

#include "support/forwarding_driver.hpp"
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

enum class Refusal { refuse, lie };

struct Injection {
	std::atomic<unsigned> every{0}; /* 0: never */
	std::atomic<int> budget{-1};    /* refusals left; -1: no limit */
	std::atomic<unsigned> calls{0}, refused{0};
	/* keys the device was asked to destroy, and how often one was asked twice
	 * (a pooling device would hand such a key to two registrations) */
	std::mutex destroyed_mu;
	std::set<std::uint32_t> destroyed;
	std::atomic<unsigned> destroyed_twice{0};
	std::atomic<Refusal> how{Refusal::refuse};
	uring::Hca *hca = nullptr; /* the wrapped HCA, for the test's DMA */

	bool now()
	{
		const unsigned n = every.load();
		if (!n || budget.load() == 0 || ++calls % n != 0)
			return false;
		if (budget.load() > 0)
			--budget;
		++refused;
		return true;
	}
};

Injection &injection()
{
	static Injection i;
	return i;
}

/* Since the core passes what changed (map_changed), a resync reaches the
 * device there; a full map() too: both refuse or lie alike. */
class FakeFailingMapDriver final : public ForwardingDriver {
public:
	using ForwardingDriver::ForwardingDriver;
	std::string_view name() const noexcept override { return "fake_failing_map"; }
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> t) override
	{
		if (injection().how == Refusal::refuse && injection().now())
			return make_error(EIO, "fake_failing_map: create refused (injected)");
		return ForwardingDriver::create(va, len, access, t);
	}
	void destroy(Keys keys) noexcept override
	{
		{
			std::lock_guard lock(injection().destroyed_mu);
			if (!injection().destroyed.insert(keys.lkey).second)
				++injection().destroyed_twice;
		}
		ForwardingDriver::destroy(keys);
	}
	Result<Keys> map(Keys keys, std::span<const Extent> t) override
	{
		if (auto refused = refusal(keys))
			return *refused;
		return ForwardingDriver::map(keys, t);
	}
	Result<Keys> map_changed(Keys keys, std::span<const Extent> t,
				 std::span<const Range> changed) override
	{
		if (auto refused = refusal(keys))
			return *refused;
		return ForwardingDriver::map_changed(keys, t, changed);
	}

private:
	static std::optional<Result<Keys>> refusal(Keys keys)
	{
		if (!injection().now())
			return std::nullopt;
		if (injection().how == Refusal::lie)
			return Result<Keys>(keys); /* the HCA keeps the old translation */
		return Result<Keys>(make_error(EIO, "fake_failing_map: map refused (injected)"));
	}
};

const DriverFactory fake_failing_map_factory{
	.name = "fake_failing_map",
	.available = [](std::string &) { return true; },
	.create = [](const DriverConfig &config) -> Result<std::unique_ptr<Driver>> {
		auto inner = find_driver("uring")->create(config);
		if (!inner)
			return std::move(inner).error();
		injection().hca = &dynamic_cast<uring::Hca &>(**inner);
		return std::unique_ptr<Driver>(
			std::make_unique<FakeFailingMapDriver>(std::move(*inner)));
	},
};
MRSYNC_REGISTER_DRIVER(fake_failing_map_factory)

/* A context on the fake device, changes reported by the test (manual). */
std::optional<Context> faulty_context(std::uint32_t flags)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_MANUAL;
	params.driver = "fake_failing_map";
	params.flags = flags;
	auto created = Context::create(params);
	EXPECT_TRUE(created.ok()) << created.error().message;
	if (!created)
		return std::nullopt;
	return std::move(created).value();
}

struct Counts {
	unsigned lookups = 0, delivered = 0, lost = 0, refused_dma = 0, failed = 0;
	std::string first_failure;
};

/* Registers an area, then over and over replaces one page (mmap MAP_FIXED,
 * reported through the manual source) and DMA-writes into a random page of
 * the area through a fresh lookup, checking by content. */
Counts run(Refusal how, unsigned every, unsigned rounds)
{
	constexpr std::size_t kPages = 16;
	Mapping m(kPages * kPage);
	EXPECT_TRUE(m);
	injection().every = 0;
	injection().budget = -1;
	injection().how = how;
	std::optional<Context> made = faulty_context(0);
	if (!made)
		return {};
	Context &ctx = *made;
	uring::Hca &hca = *injection().hca;
	{
		auto whole = ctx.get(m.at(0), kPages * kPage);
		EXPECT_TRUE(whole.ok()) << whole.error().message;
	}
	injection().every = every;
	std::mt19937 rng(7);
	Counts c;
	for (unsigned i = 0; i < rounds; ++i) {
		const std::size_t changed = rng() % kPages;
		EXPECT_TRUE(remap_fresh(m.at(changed * kPage), kPage));
		EXPECT_TRUE(ctx.notify_unmap(m.at(changed * kPage), kPage).ok());
		/* Half the writes go to the page that just changed. */
		const std::size_t page = (i & 1) ? changed : rng() % kPages;
		std::byte *const va = m.at(page * kPage + 64);
		++c.lookups;
		mrsync_reg reg;
		if (int rc = mrsync_get(ctx.c_handle(), va, 256, MRSYNC_ACCESS_LOCAL_WRITE, &reg);
		    rc < 0) {
			if (c.first_failure.empty())
				c.first_failure = mrsync_last_error();
			++c.failed;
			continue;
		}
		const auto bytes = pattern(256, i);
		const int done = dma_write(hca, reg.lkey, va, bytes);
		mrsync_put(ctx.c_handle(), &reg);
		if (done != 256)
			++c.refused_dma;
		else if (sees(va, bytes))
			++c.delivered;
		else
			++c.lost;
	}
	injection().every = 0;
	return c;
}

std::string line(const Counts &c)
{
	return "lookups=" + std::to_string(c.lookups) + " delivered=" + std::to_string(c.delivered) +
	       " lost=" + std::to_string(c.lost) + " dma_refused=" + std::to_string(c.refused_dma) +
	       " failed=" + std::to_string(c.failed) + " refused_by_device=" +
	       std::to_string(injection().refused.load()) +
	       (c.first_failure.empty() ? "" : " first failure: " + c.first_failure);
}

TEST(MapFailure, NoLookupServesATranslationTheDeviceRefusedToRewrite)
{
	injection().refused = 0;
	const Counts c = run(Refusal::refuse, 3, 600);
	std::printf("map failure [refuse every 3rd map/create]: %s\n", line(c).c_str());
	EXPECT_GT(injection().refused.load(), 50u) << "the injection did not bite";
	EXPECT_EQ(c.lost, 0u) << line(c);
	EXPECT_EQ(c.refused_dma, 0u) << "a lookup handed out entries the device does not have";
	/* A refused map retires the registration and the lookup starts over;
	 * only a refused create reaches the caller, as EIO naming the device. */
	EXPECT_GT(c.delivered, c.lookups / 2) << line(c);
	if (c.failed) {
		EXPECT_NE(c.first_failure.find("refused (injected)"), std::string::npos) << line(c);
	}
}

TEST(MapFailure, NegativeControlADeviceThatLiesLosesWrites)
{
	injection().refused = 0;
	const Counts c = run(Refusal::lie, 1, 600);
	std::printf("map failure negative control [device ignores every map]: %s\n",
		    line(c).c_str());
	EXPECT_GT(c.lost, 0u) << "the check above cannot see a stale translation: " << line(c);
}

/* A key outlives the lookup that handed it out: a peer keeps its rkey, a
 * holder posts until its put. When the device refuses a resync's
 * invalidation, the core retires the registration -- and must make the
 * device refuse the key before the replaced page goes, or a write through
 * it lands in a page the application no longer sees. `refusals` maps are
 * refused from the invalidation on: 1 leaves the core's all-invalid map to
 * revoke the key, 2 refuses that too, so the key is destroyed. */
Counts write_through_kept_key(unsigned refusals, bool revoke, unsigned rounds)
{
	constexpr std::size_t kPages = 8;
	injection().every = 0;
	injection().how = Refusal::refuse;
	std::optional<Context> made = faulty_context(revoke ? 0 : MRSYNC_CTX_F_TEST_NO_REVOKE);
	if (!made)
		return {};
	Context &ctx = *made;
	uring::Hca &hca = *injection().hca;
	Counts c;
	/* A new area each round, all kept mapped: the invalidation refused must
	 * be this round's registration's, not that of a retired one still in the
	 * index over the same addresses. */
	Mapping areas(rounds * kPages * kPage);
	EXPECT_TRUE(areas);
	for (unsigned i = 0; i < rounds; ++i) {
		std::byte *const area = areas.at(i * kPages * kPage);
		const std::size_t page = i % kPages;
		std::uint32_t kept = 0;
		{
			auto whole = ctx.get(area, kPages * kPage);
			EXPECT_TRUE(whole.ok()) << whole.error().message;
			if (!whole)
				return c;
			kept = whole->lkey();
		} /* put: the key lives on, as a peer's rkey does */
		EXPECT_TRUE(remap_fresh(area + page * kPage, kPage));
		EXPECT_TRUE(ctx.notify_unmap(area + page * kPage, kPage).ok());
		injection().calls = 0;
		injection().budget = int(refusals);
		injection().every = 1;
		(void)mrsync_resync(ctx.c_handle()); /* its invalidation is refused */
		injection().every = 0;
		std::byte *const va = area + page * kPage + 64;
		const auto bytes = pattern(256, i);
		++c.lookups;
		if (dma_write(hca, kept, va, bytes) != 256)
			++c.refused_dma; /* what must happen */
		else if (sees(va, bytes))
			++c.delivered;
		else
			++c.lost; /* the write went to the replaced page */
		/* The retired registration is still indexed until reclaimed: a
		 * second change in it must not reach the device through keys
		 * already destroyed (or destroy them twice). */
		const std::size_t other = (page + 1) % kPages;
		EXPECT_TRUE(remap_fresh(area + other * kPage, kPage));
		EXPECT_TRUE(ctx.notify_unmap(area + other * kPage, kPage).ok());
		injection().calls = 0;
		injection().budget = int(refusals);
		injection().every = 1;
		(void)mrsync_resync(ctx.c_handle());
		injection().every = 0;
	}
	return c;
}

TEST(MapFailure, AKeyKeptAcrossARefusedInvalidationIsRevoked)
{
	for (const unsigned refusals : {1u, 2u}) {
		injection().refused = 0;
		injection().destroyed.clear();
		injection().destroyed_twice = 0;
		const Counts c = write_through_kept_key(refusals, true, 40); /* destroys the context */
		EXPECT_EQ(injection().destroyed_twice.load(), 0u) << "a key was destroyed twice";
		std::printf("kept key, %s: %s\n",
			    refusals == 1 ? "revoked by an all-invalid map" : "destroyed",
			    line(c).c_str());
		EXPECT_GE(injection().refused.load(), 40u * refusals) << "the injection did not bite";
		EXPECT_EQ(c.lost, 0u) << line(c);
		EXPECT_EQ(c.refused_dma, c.lookups) << line(c);
	}
}

TEST(MapFailure, NegativeControlAKeyNotRevokedLosesWrites)
{
	injection().refused = 0;
	const Counts c = write_through_kept_key(1, false, 40);
	std::printf("kept key, not revoked (negative control): %s\n", line(c).c_str());
	EXPECT_GT(c.lost, 0u) << "a retired key the device still translates should lose writes: "
			      << line(c);
}

/* The same as an application would race it: a peer thread keeps writing
 * through the rkey it was given (fetching a new one only when a write is
 * refused, as a peer would after an error), while another thread replaces
 * pages and resyncs on a device that refuses every 3rd map. A page's lock
 * orders a write and its check against that page's replacement, so a write
 * the device reports done must be seen by the application: a lost one is a
 * key still reaching a replaced page. */
Counts peer_during_remaps(std::uint32_t flags)
{
	constexpr std::size_t kPages = 16;
	Mapping m(kPages * kPage);
	EXPECT_TRUE(m);
	injection().every = 0;
	injection().budget = -1;
	injection().how = Refusal::refuse;
	std::optional<Context> made = faulty_context(flags);
	if (!made)
		return {};
	Context &ctx = *made;
	uring::Hca &hca = *injection().hca;
	std::array<std::mutex, kPages> page_mu;
	std::atomic<bool> stop{false};
	injection().refused = 0;
	injection().every = 3;
	std::thread remapper([&] {
		std::mt19937 rng(11);
		for (unsigned i = 0; i < 400; ++i) {
			{
				const std::size_t p = rng() % kPages;
				std::lock_guard lock(page_mu[p]);
				EXPECT_TRUE(remap_fresh(m.at(p * kPage), kPage));
				EXPECT_TRUE(ctx.notify_unmap(m.at(p * kPage), kPage).ok());
				(void)mrsync_resync(ctx.c_handle());
			}
			std::this_thread::sleep_for(std::chrono::microseconds(50));
		}
		stop = true;
	});
	Counts c;
	std::uint32_t key = 0;
	std::mt19937 rng(5);
	for (unsigned i = 0; !stop.load(); ++i) {
		if (!key) { /* (re)connect: a lookup of the whole area */
			auto whole = ctx.get(m.at(0), kPages * kPage);
			if (!whole) {
				++c.failed;
				continue;
			}
			key = whole->lkey();
		}
		const std::size_t p = rng() % kPages;
		std::byte *const va = m.at(p * kPage + 128);
		const auto bytes = pattern(256, i);
		std::lock_guard lock(page_mu[p]);
		++c.lookups;
		if (dma_write(hca, key, va, bytes) != 256) {
			++c.refused_dma;
			key = 0;
		} else if (sees(va, bytes)) {
			++c.delivered;
		} else {
			++c.lost;
		}
	}
	remapper.join();
	injection().every = 0;
	return c;
}

TEST(MapFailure, APeerWritingThroughItsKeyWhileAnotherThreadRemapsLosesNothing)
{
	const Counts c = peer_during_remaps(0);
	std::printf("peer writing through its key during remaps, every 3rd map refused: %s\n",
		    line(c).c_str());
	EXPECT_GT(injection().refused.load(), 20u) << "the injection did not bite";
	EXPECT_GT(c.delivered, 0u) << line(c);
	EXPECT_EQ(c.lost, 0u) << line(c);
}

TEST(MapFailure, NegativeControlAPeerWritingThroughAnUnrevokedKeyLosesWrites)
{
	const Counts c = peer_during_remaps(MRSYNC_CTX_F_TEST_NO_REVOKE);
	std::printf("the same, keys not revoked (negative control): %s\n", line(c).c_str());
	EXPECT_GT(c.lost, 0u) << line(c);
}

} // namespace
} // namespace mrsync::test
