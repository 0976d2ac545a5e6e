// SPDX-License-Identifier: MIT
// The user-space generation + event ring shared by the host sources.
#include <gtest/gtest.h>

#include <mrsync/event_buffer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

using mrsync::EventBuffer;
using mrsync::Range;
using Ranges = std::vector<Range>;
using namespace std::chrono_literals;

// Page i, spaced so that no two of them touch (no coalescing).
Range page(std::uint64_t i)
{
	return {0x100000 + 2 * i * 0x1000, 0x100000 + (2 * i + 1) * 0x1000};
}

TEST(EventBuffer, DefaultCapacity)
{
	EXPECT_EQ(EventBuffer().capacity(), mrsync::kDefaultEventEntries);
	EXPECT_EQ(EventBuffer(0).capacity(), mrsync::kDefaultEventEntries);
	EXPECT_EQ(EventBuffer(8).capacity(), 8u);
}

TEST(EventBuffer, GenerationIsAloneOnItsCacheLine)
{
	EventBuffer ring;
	EXPECT_EQ(reinterpret_cast<std::uintptr_t>(ring.generation()) % 64, 0u);
	EXPECT_GE(sizeof(EventBuffer), 128u);
}

TEST(EventBuffer, AppendThenDrainKeepsOrder)
{
	EventBuffer ring(16);
	ring.append(page(3));
	ring.append(page(1));
	ring.append(page(2));
	Ranges out{page(9)}; // drain appends to what is there
	EXPECT_FALSE(ring.drain(out));
	EXPECT_EQ(out, (Ranges{page(9), page(3), page(1), page(2)}));
	out.clear();
	EXPECT_FALSE(ring.drain(out));
	EXPECT_TRUE(out.empty());
}

TEST(EventBuffer, GenerationMovesAfterEveryAppendAndOncePerBatch)
{
	EventBuffer ring(16);
	const std::uint64_t g0 = ring.load_generation();
	ring.append(page(0));
	EXPECT_EQ(ring.load_generation(), g0 + 1);
	const Range batch[] = {page(1), page(2), page(3)};
	ring.append(batch);
	EXPECT_EQ(ring.load_generation(), g0 + 2);
	Ranges out;
	ring.drain(out);
	EXPECT_EQ(out.size(), 4u);
	EXPECT_EQ(ring.load_generation(), g0 + 2) << "draining must not move the generation";
}

TEST(EventBuffer, TouchingRangesCoalesceWithTheLastOne)
{
	EventBuffer ring(16);
	ring.append({0x1000, 0x2000});
	ring.append({0x2000, 0x3000}); // adjacent
	ring.append({0x0800, 0x1800}); // overlapping
	ring.append({0x5000, 0x6000}); // apart
	Ranges out;
	EXPECT_FALSE(ring.drain(out));
	EXPECT_EQ(out, (Ranges{{0x0800, 0x3000}, {0x5000, 0x6000}}));
	EXPECT_EQ(ring.stats().coalesced, 2u);
	EXPECT_EQ(ring.stats().appended, 4u);
}

TEST(EventBuffer, OverflowIsCountedAndReportedOnce)
{
	EventBuffer ring(4);
	const std::uint64_t g0 = ring.load_generation();
	for (std::uint64_t i = 0; i < 7; ++i)
		ring.append(page(i));
	EXPECT_EQ(ring.load_generation(), g0 + 7) << "a full ring still moves the generation";
	EXPECT_EQ(ring.stats().lost, 3u);

	Ranges out;
	EXPECT_TRUE(ring.drain(out)) << "lost ranges must be reported";
	EXPECT_EQ(out, (Ranges{page(0), page(1), page(2), page(3)}));
	EXPECT_EQ(ring.stats().overflows, 1u);

	out.clear();
	EXPECT_FALSE(ring.drain(out)) << "an overflow is reported once";
	ring.append(page(8));
	EXPECT_FALSE(ring.drain(out));
	EXPECT_EQ(out, (Ranges{page(8)}));
	EXPECT_EQ(ring.stats().overflows, 1u);
}

TEST(EventBuffer, AnnounceMovesGenerationAndDrainWaitsForPublish)
{
	EventBuffer ring(16);
	const std::uint64_t g0 = ring.load_generation();
	ring.announce();
	EXPECT_NE(ring.load_generation(), g0) << "announce must move the generation first";

	std::atomic<bool> drained{false};
	Ranges out;
	bool overflow = true;
	std::thread consumer([&] {
		overflow = ring.drain(out);
		drained = true;
	});
	std::this_thread::sleep_for(100ms);
	EXPECT_FALSE(drained) << "drain must wait for the announced batch";
	const Range batch[] = {page(4), page(5)};
	ring.publish(batch);
	consumer.join();
	EXPECT_TRUE(drained);
	EXPECT_FALSE(overflow);
	EXPECT_EQ(out, (Ranges{page(4), page(5)}));
}

TEST(EventBuffer, AnnouncementNeverPublishedBecomesAnOverflow)
{
	EventBuffer ring(16);
	ring.append(page(0));
	ring.announce(); // and never publish (as in a fork child)
	const auto start = std::chrono::steady_clock::now();
	Ranges out;
	EXPECT_TRUE(ring.drain(out)) << "a lost announcement means: resync everything";
	/* A hang bound, not a speed target: drain gives up on the announcement
	 * after its own timeout; under ASan on a loaded machine that took 5.8 s. */
	EXPECT_LT(std::chrono::steady_clock::now() - start, 60s);
	EXPECT_EQ(out, (Ranges{page(0)}));
}

TEST(EventBuffer, EmptyPublishEndsTheAnnouncement)
{
	EventBuffer ring(16);
	ring.announce();
	ring.publish({});
	const auto start = std::chrono::steady_clock::now();
	Ranges out;
	EXPECT_FALSE(ring.drain(out));
	EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

// A consumer that sees a generation finds every range appended before it:
// with one bump per append, after loading generation g0 + n it must have
// drained at least n ranges in total, in the order they were appended.
TEST(EventBuffer, ConcurrentProducerAndConsumer)
{
	constexpr std::uint64_t kCount = 200000;
	EventBuffer ring(1024);
	const std::uint64_t g0 = ring.load_generation();
	std::atomic<std::uint64_t> consumed{0};

	std::thread producer([&] {
		for (std::uint64_t i = 0; i < kCount; ++i) {
			// Stay well inside the ring: this test is about ordering.
			while (i - consumed.load(std::memory_order_acquire) > 512)
				std::this_thread::yield();
			ring.append(page(i));
		}
	});

	std::uint64_t received = 0;
	std::uint64_t violations = 0;
	std::uint64_t disorder = 0;
	Ranges out;
	while (received < kCount) {
		const std::uint64_t seen = ring.load_generation() - g0;
		out.clear();
		EXPECT_FALSE(ring.drain(out));
		for (const Range &range : out)
			if (range != page(received++))
				++disorder;
		if (received < seen)
			++violations;
		consumed.store(received, std::memory_order_release);
	}
	producer.join();
	EXPECT_EQ(received, kCount);
	EXPECT_EQ(disorder, 0u);
	EXPECT_EQ(violations, 0u) << "saw a generation whose ranges were not in the ring";
	EXPECT_EQ(ring.stats().lost, 0u);
}

TEST(EventBuffer, ManyProducersLoseNothingUnlessFull)
{
	constexpr int kThreads = 4;
	constexpr std::uint64_t kEach = 20000;
	EventBuffer ring(kThreads * kEach);
	std::vector<std::thread> producers;
	for (int t = 0; t < kThreads; ++t)
		producers.emplace_back([&ring, t] {
			for (std::uint64_t i = 0; i < kEach; ++i)
				ring.append(page(t * kEach + i));
		});
	Ranges out;
	bool overflow = false;
	while (out.size() < kThreads * kEach && !overflow)
		overflow = ring.drain(out);
	for (auto &producer : producers)
		producer.join();
	overflow = ring.drain(out) || overflow;
	EXPECT_FALSE(overflow);
	// Coalescing may merge ranges of different threads that happen to
	// touch; pages are spaced, so nothing touches and nothing merges.
	EXPECT_EQ(out.size(), kThreads * kEach);
	EXPECT_EQ(ring.load_generation(), kThreads * kEach);
}

} // namespace
