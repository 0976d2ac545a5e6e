/* SPDX-License-Identifier: MIT */
/* map_changed (issue 14): the uring HCA rewrites only the extents that hold
 * the changed offsets. What it guards is checked by DMA on real pages: a
 * page passed as changed is served by its new backing, pages not passed
 * keep theirs -- and the negative control shows that a changed page NOT
 * passed keeps the stale slot, whose write the application never sees. */
#include "uring_test_util.hpp"

#include <cerrno>

namespace mrsync::uring::test {
namespace {

/* 8 pages registered over one backing; page `remapped` then replaced by a
 * fresh page pinned as its own backing: `split` is the new translation. */
struct Remapped {
	Pages mem{8};
	BackingId old = kNoBacking, fresh = kNoBacking;
	Keys keys;
	std::vector<Extent> split;
};

class MapChanged : public UringTest {
protected:
	void remap(Remapped &r, std::size_t page)
	{
		ASSERT_TRUE(r.mem.ok());
		std::memset(r.mem.at(0), 0x11, r.mem.bytes());
		r.old = pin(r.mem.va(), r.mem.bytes());
		const Extent whole[] = {{0, r.mem.bytes(), r.old}};
		r.keys = create(r.mem.va(), r.mem.bytes(), whole);
		ASSERT_TRUE(r.mem.remap(page));
		r.fresh = pin(r.mem.va(page), kPage);
		const std::uint64_t at = page * kPage;
		r.split = {{0, at, r.old},
			   {at, kPage, r.fresh},
			   {at + kPage, r.mem.bytes() - at - kPage, r.old}};
	}

	/* Whether a DMA write to page p reaches the application. */
	bool write_lands(const Remapped &r, std::size_t p, unsigned seed)
	{
		const auto data = pattern(kPage, seed);
		EXPECT_EQ(write_sync(*hca, r.keys.lkey, r.mem.va(p), data), int(kPage));
		return same(r.mem.page(p), data);
	}
};

TEST_F(MapChanged, TheChangedPageIsServedByItsNewBacking)
{
	Remapped r;
	ASSERT_NO_FATAL_FAILURE(remap(r, 5));
	const Range changed[] = {{5 * kPage, 6 * kPage}};
	auto mapped = hca->map_changed(r.keys, r.split, changed);
	ASSERT_TRUE(mapped) << mapped.error().message;
	EXPECT_EQ(*mapped, r.keys);
	ASSERT_TRUE(hca->fence());
	EXPECT_TRUE(write_lands(r, 5, 1)) << "the changed page is served by its new backing";
	for (std::size_t p : {0u, 4u, 6u, 7u})
		EXPECT_TRUE(write_lands(r, p, unsigned(10 + p))) << "untouched page " << p;
}

/* Negative control: the same change, but the driver is told about another
 * page. The driver trusts `changed` (that is what makes it cheap), so page 5
 * keeps the old slot: the device reports success and the bytes go to the
 * old, still pinned page -- a lost write. The core's duty is to pass every
 * page it changed (lib/core/updater.cpp, Update::commit). */
TEST_F(MapChanged, NegativeControlAChangedPageNotPassedLosesTheWrite)
{
	Remapped r;
	ASSERT_NO_FATAL_FAILURE(remap(r, 5));
	const Range elsewhere[] = {{0, kPage}};
	ASSERT_TRUE(hca->map_changed(r.keys, r.split, elsewhere));
	ASSERT_TRUE(hca->fence());
	EXPECT_FALSE(write_lands(r, 5, 2)) << "a page not passed as changed must keep its old slot";
	EXPECT_TRUE(all_bytes(r.mem.page(5), std::byte{0})) << "the application sees none of it";
	/* The full map() repairs it: the list the core handed was right. */
	ASSERT_TRUE(hca->map(r.keys, r.split));
	EXPECT_TRUE(write_lands(r, 5, 3));
}

/* Invalidation of several runs in one call (what a resync does): each run
 * refuses DMA, the pages between them keep working. */
TEST_F(MapChanged, SeveralRunsInvalidatedInOneCall)
{
	Pages mem(8);
	ASSERT_TRUE(mem.ok());
	const BackingId b = pin(mem.va(), mem.bytes());
	const Extent whole[] = {{0, mem.bytes(), b}};
	const Keys keys = create(mem.va(), mem.bytes(), whole);
	const Extent holes[] = {{0, kPage, b},
				{kPage, kPage, kNoBacking},
				{2 * kPage, kPage, b},
				{3 * kPage, 2 * kPage, kNoBacking},
				{5 * kPage, 3 * kPage, b}};
	const Range runs[] = {{kPage, 2 * kPage}, {3 * kPage, 5 * kPage}};
	ASSERT_TRUE(hca->map_changed(keys, holes, runs));
	const auto data = pattern(kPage, 4);
	for (std::size_t p : {1u, 3u, 4u})
		EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(p), data), -EFAULT) << "page " << p;
	for (std::size_t p : {0u, 2u, 5u, 7u}) {
		EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(p), data), int(kPage));
		EXPECT_TRUE(same(mem.page(p), data)) << "page " << p;
	}
	/* No change named: nothing is rewritten, the holes stay. */
	ASSERT_TRUE(hca->map_changed(keys, whole, {}));
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), data), -EFAULT);
}

TEST_F(MapChanged, RejectsBadChangedRangesAndKeepsTheOldList)
{
	Remapped r;
	ASSERT_NO_FATAL_FAILURE(remap(r, 3));
	const Range unsorted[] = {{4 * kPage, 5 * kPage}, {3 * kPage, 4 * kPage}};
	const Range outside[] = {{7 * kPage, 9 * kPage}};
	const Range empty[] = {{3 * kPage, 3 * kPage}};
	for (std::span<const Range> bad : {std::span<const Range>(unsorted),
					   std::span<const Range>(outside),
					   std::span<const Range>(empty)}) {
		auto k = hca->map_changed(r.keys, r.split, bad);
		ASSERT_FALSE(k);
		EXPECT_EQ(k.error().code, EINVAL);
		EXPECT_NE(k.error().message.find("changed range"), std::string::npos)
			<< k.error().message;
	}
	/* A window naming a backing that is not pinned is refused too. */
	std::vector<Extent> unpinned = r.split;
	unpinned[1].backing = r.fresh + 1;
	const Range page3[] = {{3 * kPage, 4 * kPage}};
	auto k = hca->map_changed(r.keys, unpinned, page3);
	ASSERT_FALSE(k);
	EXPECT_NE(k.error().message.find("not pinned"), std::string::npos) << k.error().message;
	/* The device kept the old list: page 3 still goes to the old slot. */
	const auto data = pattern(kPage, 5);
	EXPECT_EQ(write_sync(*hca, r.keys.lkey, r.mem.va(3), data), int(kPage));
	EXPECT_FALSE(same(r.mem.page(3), data));
}

} // namespace
} // namespace mrsync::uring::test
