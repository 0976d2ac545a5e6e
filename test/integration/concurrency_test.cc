// Several threads look up and DMA into one registration while its other
// pages are remapped underneath them: every hit is current, every write lands.
#include <atomic>
#include <thread>

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

TEST(Concurrency, GetsFromSeveralThreadsDuringChurnOfTheSameRegistration)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	constexpr unsigned kThreads = 3, kOwned = 4, kChurned = 4;
	Mapping buf((kThreads * kOwned + kChurned) * kPage);
	ASSERT_TRUE(ctx.hint(buf.at(0), buf.size()).ok());
	const Keys keys = [&] {
		auto reg = ctx.get(buf.at(0), buf.size());
		return Keys{reg->lkey(), reg->rkey()};
	}();

	std::atomic<bool> stop{false};
	std::atomic<unsigned> lost{0}, failures{0};
	std::vector<std::thread> workers;
	for (unsigned t = 0; t < kThreads; ++t)
		workers.emplace_back([&, t] {
			for (unsigned i = 0; !stop.load(); ++i) {
				std::byte *va = buf.at((t * kOwned + i % kOwned) * kPage + (i % 60) * 64);
				auto reg = ctx.get(va, 64);
				if (!reg || reg->lkey() != keys.lkey) {
					failures.fetch_add(1);
					continue;
				}
				const auto bytes = pattern(64, t * 1000 + i);
				if (dma_write(hca_of(ctx), reg->lkey(), va, bytes) != 64)
					failures.fetch_add(1);
				else if (!sees(va, bytes))
					lost.fetch_add(1);
			}
		});
	/* The churn pages belong to nobody else: remap them, then write into
	 * them through a fresh lookup, which must see the new pages. */
	for (unsigned i = 0; i < 300; ++i) {
		std::byte *page = buf.at((kThreads * kOwned + i % kChurned) * kPage);
		ASSERT_TRUE(remap_fresh(page, kPage));
		auto reg = ctx.get(page, 64);
		ASSERT_TRUE(reg.ok()) << reg.error().message;
		const auto bytes = pattern(64, 5000 + i);
		ASSERT_EQ(dma_write(hca_of(ctx), reg->lkey(), page, bytes), 64);
		EXPECT_TRUE(sees(page, bytes)) << "churned page write lost at round " << i;
	}
	stop.store(true);
	for (auto &w : workers)
		w.join();
	EXPECT_EQ(lost.load(), 0u);
	EXPECT_EQ(failures.load(), 0u);
	const mrsync_stats s = ctx.stats();
	EXPECT_GE(s.resyncs, 1u);
	EXPECT_GT(s.hits, 0u);
	EXPECT_EQ(s.regions, 1u) << "one registration, never replaced";
}

} // namespace
} // namespace mrsync::test
