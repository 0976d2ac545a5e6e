/* SPDX-License-Identifier: MIT */
/* The DMA engine (drivers/dma_engine) on its own, under a translator of the
 * test's (a table of pieces per key): what it guarantees whichever driver
 * translates for it -- the uring HCA's extent lists or the mlx5 model's KLM
 * walk. Real io_uring fixed buffers over real anonymous pages throughout. */
#include "uring_test_util.hpp"

#include <algorithm>
#include <cstring>
#include <map>

#include "dma_engine.hpp"

namespace mrsync::dma::test {
namespace {

using uring::test::all_bytes;
using uring::test::kPage;
using uring::test::Pages;
using uring::test::pattern;
using uring::test::same;

/** key -> the pieces that serve it; a request gets the parts of them it
 *  covers. The engine checks that they add up to the request. */
class TableTranslator final : public Translator {
public:
	int translate(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool,
		      std::vector<Piece> &out) override
	{
		if (refuse)
			return refuse;
		auto it = table.find(key);
		if (it == table.end())
			return EINVAL;
		for (const Piece &s : it->second) {
			const std::uint64_t lo = std::max(va, s.va), hi = std::min(va + len, s.va + s.len);
			if (lo < hi)
				out.push_back({s.backing, lo, hi - lo});
		}
		return 0;
	}
	std::map<std::uint32_t, std::vector<Piece>> table;
	int refuse = 0;
};

class EngineTest : public ::testing::Test {
protected:
	void SetUp() override
	{
		std::string why;
		if (!Engine::available(why))
			GTEST_SKIP() << "io_uring unavailable: " << why;
		auto e = Engine::create({.name = "engine-test"}, translator);
		ASSERT_TRUE(e) << e.error().message;
		engine = std::move(e).value();
	}

	BackingId pin(const Pages &mem, std::size_t first, std::size_t pages)
	{
		auto b = engine->pin(mem.va(first), pages * kPage);
		EXPECT_TRUE(b) << b.error().message;
		return b ? *b : kNoBacking;
	}
	/** Changes the table as a driver must: under the submission lock. */
	void set(std::uint32_t key, std::vector<Piece> pieces)
	{
		auto lock = engine->hold_submission();
		translator.table[key] = std::move(pieces);
	}
	/** One request to its end: the completion's result; `refusal` gets
	 *  what write()/read() reported at submission. */
	int dma(bool into, std::uint32_t key, std::uint64_t va, std::span<std::byte> buf,
		int *refusal = nullptr)
	{
		const std::uint64_t ud = ++next_ud;
		const Status st = into ? engine->write(key, va, buf, ud, refusal)
				       : engine->read(key, va, buf, ud, refusal);
		if (!st)
			return -st.error().code;
		auto c = engine->wait(ud);
		return c ? c->result : -c.error().code;
	}

	TableTranslator translator; /* outlives the engine */
	std::unique_ptr<Engine> engine;
	std::uint64_t next_ud = 0;
};

/* The bug the project exists for, at the engine's level, and its cure. A
 * translator that keeps handing out the slot pinned before the application
 * remapped the page loses the write: it "succeeds" into the old page nobody
 * sees (the negative control). Handing out a slot pinned over the new page
 * delivers it. */
TEST_F(EngineTest, StaleSlotLosesTheWriteACurrentSlotDeliversIt)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	const BackingId old_slot = pin(mem, 0, 1);
	set(1, {{old_slot, mem.va(), kPage}});
	auto first = pattern(kPage, 1);
	ASSERT_EQ(dma(true, 1, mem.va(), first), int(kPage));
	ASSERT_TRUE(same(mem.page(0), first)) << "a current slot delivers";

	ASSERT_TRUE(mem.remap(0));
	auto second = pattern(kPage, 2);
	EXPECT_EQ(dma(true, 1, mem.va(), second), int(kPage))
		<< "the device reports success through the stale slot";
	EXPECT_TRUE(all_bytes(mem.page(0), std::byte{0}))
		<< "negative control: the stale slot's write should be lost";

	const BackingId new_slot = pin(mem, 0, 1);
	set(1, {{new_slot, mem.va(), kPage}});
	ASSERT_TRUE(engine->fence());
	engine->unpin(old_slot);
	EXPECT_EQ(dma(true, 1, mem.va(), second), int(kPage));
	EXPECT_TRUE(same(mem.page(0), second)) << "the re-pinned slot delivers";
	ASSERT_TRUE(engine->wait_releases());
	const EngineStats s = engine->stats();
	EXPECT_EQ(s.slots_in_use, 1u);
	EXPECT_EQ(s.pinned_bytes, kPage);
}

/* A piece on a backing unpinned since (a translator that missed a retire),
 * or on none, refuses the whole request before any byte moves -- also the
 * pieces whose slots are still pinned. */
TEST_F(EngineTest, RetiredOrMissingBackingRefusesTheWholeRequest)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	const BackingId a = pin(mem, 0, 1), b = pin(mem, 1, 1);
	set(1, {{a, mem.va(0), kPage}, {b, mem.va(1), kPage}});
	set(2, {{a, mem.va(0), kPage}, {kNoBacking, mem.va(1), kPage}});
	engine->unpin(b);
	auto data = pattern(2 * kPage, 3);
	for (std::uint32_t key : {1u, 2u}) {
		int refusal = 0;
		EXPECT_EQ(dma(true, key, mem.va(), data, &refusal), -EFAULT) << "key " << key;
		EXPECT_EQ(refusal, EFAULT);
	}
	EXPECT_TRUE(all_bytes({mem.at(0), 2 * kPage}, std::byte{0})) << "nothing moved";
	/* Pieces that do not add up to the request (a translator's bug):
	 * refused as well, though the one piece there is live. */
	set(3, {{a, mem.va(0), kPage}});
	EXPECT_EQ(dma(true, 3, mem.va(0), data), -EFAULT);
	const EngineStats s = engine->stats();
	EXPECT_EQ(s.dma_refused, 3u);
	EXPECT_EQ(s.dma_submitted, s.dma_completed);
}

/* The translator's own refusal is the request's completion, for single
 * requests and in a burst; nothing moves. */
TEST_F(EngineTest, TranslatorRefusalIsTheCompletion)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	set(1, {{pin(mem, 0, 1), mem.va(), kPage}});
	translator.refuse = EACCES;
	auto data = pattern(kPage, 4);
	int refusal = 0;
	EXPECT_EQ(dma(true, 1, mem.va(), data, &refusal), -EACCES);
	EXPECT_EQ(refusal, EACCES);
	const DmaOp op{.lkey = 1, .va = mem.va(), .buf = data.data(), .len = std::uint32_t(kPage)};
	int result = 0;
	ASSERT_TRUE(engine->burst({&op, 1}, {&result, 1}));
	EXPECT_EQ(result, -EACCES);
	EXPECT_TRUE(all_bytes(mem.page(0), std::byte{0}));
	translator.refuse = 0;
	ASSERT_TRUE(engine->burst({&op, 1}, {&result, 1}));
	EXPECT_EQ(result, int(kPage));
	EXPECT_TRUE(same(mem.page(0), data));
}

/* kDiscard pieces (an mlx5 null MR) swallow writes and read as zeros, next
 * to pieces that move, through write()/read() and burst() alike. */
TEST_F(EngineTest, DiscardedPiecesSwallowWritesAndReadAsZeros)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	std::memset(mem.at(0), 0x5a, 2 * kPage);
	set(1, {{kDiscard, mem.va(0), kPage}, {pin(mem, 1, 1), mem.va(1), kPage}});
	set(2, {{kDiscard, mem.va(0), 2 * kPage}});
	auto data = pattern(2 * kPage, 5);
	EXPECT_EQ(dma(true, 1, mem.va(), data), int(2 * kPage));
	EXPECT_TRUE(all_bytes(mem.page(0), std::byte{0x5a})) << "the discarded page is untouched";
	EXPECT_TRUE(same(mem.page(1), {data.data() + kPage, kPage}));
	EXPECT_EQ(dma(true, 2, mem.va(), data), int(2 * kPage)) << "all discarded: still completes";

	std::vector<std::byte> back(2 * kPage, std::byte{0xff});
	EXPECT_EQ(dma(false, 1, mem.va(), back), int(2 * kPage));
	EXPECT_TRUE(all_bytes({back.data(), kPage}, std::byte{0}));
	EXPECT_TRUE(same({back.data() + kPage, kPage}, mem.page(1)));
	std::fill(back.begin(), back.end(), std::byte{0xff});
	EXPECT_EQ(dma(false, 2, mem.va(), back), int(2 * kPage)) << "all discarded";
	EXPECT_TRUE(all_bytes(back, std::byte{0}));

	std::vector<std::byte> burst_back(2 * kPage, std::byte{0xff});
	const DmaOp ops[] = {
		{.lkey = 2, .va = mem.va(), .buf = data.data(), .len = std::uint32_t(kPage)},
		{.lkey = 1, .va = mem.va(), .buf = burst_back.data(), .len = std::uint32_t(2 * kPage),
		 .into_memory = false},
	};
	int results[2] = {};
	ASSERT_TRUE(engine->burst(ops, results));
	EXPECT_EQ(results[0], int(kPage));
	EXPECT_EQ(results[1], int(2 * kPage));
	EXPECT_TRUE(all_bytes({burst_back.data(), kPage}, std::byte{0}));
	EXPECT_TRUE(same({burst_back.data() + kPage, kPage}, mem.page(1)));
}

} // namespace
} // namespace mrsync::dma::test
