// Progress under churn: one thread changes its own registered memory as fast
// as it can (each change an event); another looks up *other* memory whose
// entries need re-pinning. Every slow path loops while a generation moved
// during its pin: does the second thread's lookup ever return?
#include <atomic>
#include <chrono>
#include <thread>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

TEST(Churn, LookupsProgressWhileAnotherThreadChurns)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping x(16 * kPage), y(64 * kPage);
	ASSERT_TRUE(x);
	ASSERT_TRUE(y);
	{
		auto a = ctx->get(x.at(0), 16 * kPage);
		auto b = ctx->get(y.at(0), 64 * kPage);
		ASSERT_TRUE(a && b);
	}
	std::atomic<bool> stop{false};
	std::atomic<std::uint64_t> churned{0};
	std::thread churner([&] {
		while (!stop.load()) {
			madvise(x.at(0), 16 * kPage, MADV_DONTNEED);
			++churned;
		}
	});
	using Clock = std::chrono::steady_clock;
	const auto end = Clock::now() + std::chrono::seconds(options().seconds ? long(options().seconds) : 3);
	Tally t;
	double worst_ms = 0;
	std::uint64_t n = 0;
	while (Clock::now() < end) {
		/* the whole of y changes, then one page of it is looked up: the
		 * re-pin of 64 pages takes a while, during which x churns */
		ASSERT_TRUE(remap_fresh(y.at(0), 64 * kPage));
		const auto t0 = Clock::now();
		write_check(*ctx, y.at(0), 64 * kPage, t, unsigned(n++));
		worst_ms = std::max(worst_ms,
				    std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
	}
	stop = true;
	churner.join();
	tell("lookups while another thread churns", t);
	std::printf("  churn events=%llu lookups=%llu worst lookup+DMA %.1f ms\n",
		    (unsigned long long)churned.load(), (unsigned long long)n, worst_ms);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
	/* A livelock bound, not a speed target: a lookup that loops on others'
	 * events never ends, one on a loaded TCG guest takes a second or so. */
	EXPECT_LT(worst_ms, 10000.0) << "a lookup took ten seconds: it kept looping on others' events";
}

} // namespace
} // namespace mrsync::test::adversary
