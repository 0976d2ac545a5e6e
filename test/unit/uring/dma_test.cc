/* SPDX-License-Identifier: MIT */
/* The uring HCA's data path: fence() waits for DMA in flight, map() is atomic
 * with respect to concurrent DMA, and the completion API behaves under load. */
#include "uring_test_util.hpp"

#include <cerrno>
#include <thread>

namespace mrsync::uring::test {
namespace {

using UringDma = UringTest;

constexpr std::uint64_t kMiB = 1ull << 20;

/* Large writes are queued without collecting anything; the moment fence()
 * returns each must be in memory. The check looks first at the last bytes
 * of the last writes -- the ones a fence that does not wait would miss --
 * and cheaply: poll() copying read data out would give stragglers time to
 * land. Then reads: after fence() they are copied out and collectable. */
TEST_F(UringDma, FenceWaitsForEveryEarlierRequest)
{
	constexpr std::size_t kRequests = 16;
	constexpr std::uint64_t kLen = 2 * kMiB;
	Pages mem(kRequests * kLen / kPage);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto data = pattern(kLen, 11);
	const auto tail = [&](std::size_t i) {
		return std::span<const std::byte>(mem.at(0) + (i + 1) * kLen - 64, 64);
	};

	for (std::size_t i = 0; i < kRequests; ++i)
		ASSERT_TRUE(hca->write(keys.lkey, mem.va() + i * kLen, data, i));
	ASSERT_TRUE(hca->fence());
	for (std::size_t i = kRequests; i-- > 0;)
		ASSERT_TRUE(same(tail(i), {data.data() + kLen - 64, 64}))
			<< "fence() returned before write " << i << " landed";
	for (std::size_t i = 0; i < kRequests; ++i)
		EXPECT_TRUE(same({mem.at(0) + i * kLen, kLen}, data)) << "write " << i;

	std::vector<std::vector<std::byte>> back(kRequests, std::vector<std::byte>(kLen));
	const DrainOnExit drain(*hca);
	for (std::size_t i = 0; i < kRequests; ++i)
		ASSERT_TRUE(hca->read(keys.lkey, mem.va() + i * kLen, back[i], 100 + i));
	ASSERT_TRUE(hca->fence());
	for (std::size_t i = kRequests; i-- > 0;)
		ASSERT_TRUE(same({back[i].data() + kLen - 64, 64}, {data.data() + kLen - 64, 64}))
			<< "fence() returned before read " << i << " was copied out";
	std::vector<Completion> out(4 * kRequests);
	EXPECT_EQ(hca->poll(out), 2 * kRequests);
	const auto s = hca->stats();
	EXPECT_EQ(s.dma_submitted, s.dma_completed);
}

/* Two threads DMA into every page of a registration while the main thread
 * keeps re-pinning and re-mapping half of its entries (map, fence, unpin).
 * No request may be refused or lost: DMA sees the whole old or the whole
 * new translation, and the old one stays pinned until after the fence. */
TEST_F(UringDma, ConcurrentDmaWhileMapSwapsOtherEntries)
{
	constexpr std::size_t kPages = 64, kStable = 32, kIterations = 2000;
	Pages mem(kPages);
	ASSERT_TRUE(mem.ok());
	const BackingId stable = pin(mem.va(), kStable * kPage);
	std::vector<BackingId> churn(kPages - kStable);
	auto translation = [&] {
		std::vector<Extent> t{{0, kStable * kPage, stable}};
		for (std::size_t i = 0; i < churn.size(); ++i)
			t.push_back({(kStable + i) * kPage, kPage, churn[i]});
		return t;
	};
	for (std::size_t i = 0; i < churn.size(); ++i)
		churn[i] = pin(mem.va(kStable + i), kPage);
	const Keys keys = create(mem.va(), mem.bytes(), translation());

	std::atomic<bool> stop{false};
	std::atomic<int> failures{0};
	std::size_t rounds = 0;
	auto dma = [&](unsigned who) {
		std::vector<std::byte> back(kPage);
		for (std::size_t it = 0; it < kIterations; ++it) {
			/* Each thread owns every other page, in both halves. */
			const std::size_t p = (it * 2 + who) % kPages;
			const auto data = pattern(kPage, unsigned(it * 2 + who));
			const int w = write_sync(*hca, keys.lkey, mem.va(p), data);
			const int r = read_sync(*hca, keys.lkey, mem.va(p), back);
			if (w != int(kPage) || r != int(kPage) || !same(mem.page(p), data) ||
			    !same(back, data)) {
				ADD_FAILURE() << "thread " << who << " page " << p << ": write " << w
					      << ", read " << r;
				if (++failures > 5)
					break;
			}
		}
	};
	std::thread a(dma, 0), b(dma, 1);
	std::thread remapper([&] {
		for (; !stop; ++rounds) {
			const std::size_t i = rounds % churn.size();
			const BackingId old = churn[i];
			churn[i] = pin(mem.va(kStable + i), kPage);
			auto m = hca->map(keys, translation());
			EXPECT_TRUE(m) << m.error().message;
			EXPECT_TRUE(hca->fence());
			hca->unpin(old);
		}
	});
	a.join();
	b.join();
	stop = true;
	remapper.join();

	EXPECT_EQ(failures.load(), 0);
	EXPECT_EQ(hca->stats().dma_refused, 0u);
	EXPECT_GT(rounds, 100u) << "map() hardly ran while DMA did";
	RecordProperty("remap_rounds", int(rounds));
	ASSERT_TRUE(hca->wait_releases());
	EXPECT_EQ(hca->stats().slots_in_use, 1 + churn.size()) << "old backings were released";
}

TEST_F(UringDma, WaitPicksItsOwnCompletionAndPollKeepsOrder)
{
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto data = pattern(kPage, 12);
	for (std::uint64_t ud = 100; ud < 104; ++ud)
		ASSERT_TRUE(hca->write(keys.lkey, mem.va(ud - 100), data, ud));

	auto third = hca->wait(102);
	ASSERT_TRUE(third) << third.error().message;
	EXPECT_EQ(*third, (Completion{102, int(kPage)}));
	ASSERT_TRUE(hca->fence());
	Completion out[8];
	ASSERT_EQ(hca->poll(out), 3u);
	EXPECT_EQ(out[0].user_data + out[1].user_data + out[2].user_data, 100u + 101 + 103);

	auto none = hca->wait(102);
	ASSERT_FALSE(none);
	EXPECT_EQ(none.error().code, ENOENT);
	auto nothing = hca->wait_one(std::chrono::milliseconds(100));
	ASSERT_FALSE(nothing);
	EXPECT_EQ(nothing.error().code, ENOENT) << "nothing is outstanding: no need to wait";

	ASSERT_TRUE(hca->write(keys.lkey, mem.va(), data, 7));
	auto any = hca->wait_one();
	ASSERT_TRUE(any) << any.error().message;
	EXPECT_EQ(*any, (Completion{7, int(kPage)}));
}

class UringSmallQueue : public UringTest {
protected:
	UringSmallQueue() { options_ = HcaOptions{.queue_depth = 4, .staging_bytes = 4 * kMiB}; }
};

TEST_F(UringSmallQueue, FullQueueIsBusyUntilCompletionsAreCollected)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto data = pattern(kPage, 13);
	for (std::uint64_t ud = 0; ud < 4; ++ud)
		ASSERT_TRUE(hca->write(keys.lkey, mem.va(), data, ud));
	auto busy = hca->write(keys.lkey, mem.va(), data, 4);
	ASSERT_FALSE(busy);
	EXPECT_EQ(busy.error().code, EBUSY);

	Completion out[4];
	std::size_t got = 0;
	while (got < 4) {
		auto c = hca->wait_one();
		ASSERT_TRUE(c) << c.error().message;
		out[got++] = *c;
	}
	EXPECT_TRUE(hca->write(keys.lkey, mem.va(), data, 5));
	EXPECT_EQ(hca->wait(5)->result, int(kPage));
}

/* Four 4 MiB-staging requests of 1.5 MiB cannot all be on the wire at once:
 * the submitter waits for staging by reaping, and nothing is lost. */
TEST_F(UringSmallQueue, SubmitterWaitsForStagingSpace)
{
	constexpr std::uint64_t kLen = 3 * kMiB / 2;
	Pages mem(4 * kLen / kPage);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	std::vector<std::vector<std::byte>> data;
	for (unsigned i = 0; i < 4; ++i)
		data.push_back(pattern(kLen, 20 + i));
	for (unsigned i = 0; i < 4; ++i)
		ASSERT_TRUE(hca->write(keys.lkey, mem.va() + i * kLen, data[i], i));
	ASSERT_TRUE(hca->fence());
	for (unsigned i = 0; i < 4; ++i) {
		EXPECT_EQ(hca->wait(i)->result, int(kLen));
		EXPECT_TRUE(same({mem.at(0) + i * kLen, kLen}, data[i]));
	}
}

TEST_F(UringDma, LargestRequestAcrossManyExtents)
{
	const std::size_t pages = kMaxRequestBytes / kPage;
	Pages mem(pages);
	ASSERT_TRUE(mem.ok());
	/* 4 KiB extents alternating between two backings of the whole area:
	 * 1024 SQEs, more than fit in the SQ at once. */
	const BackingId even = pin(mem.va(), mem.bytes());
	const BackingId odd = pin(mem.va(), mem.bytes());
	std::vector<Extent> t;
	for (std::size_t p = 0; p < pages; ++p)
		t.push_back({p * kPage, kPage, p % 2 ? odd : even});
	const Keys keys = create(mem.va(), mem.bytes(), t);
	const auto data = pattern(kMaxRequestBytes, 14);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(), data), int(kMaxRequestBytes));
	EXPECT_TRUE(same({mem.at(0), mem.bytes()}, data));
	std::vector<std::byte> back(kMaxRequestBytes);
	EXPECT_EQ(read_sync(*hca, keys.lkey, mem.va(), back), int(kMaxRequestBytes));
	EXPECT_TRUE(same(back, data));
	EXPECT_EQ(hca->stats().sqes, 2 * pages);
}

} // namespace
} // namespace mrsync::uring::test
