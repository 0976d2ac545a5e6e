// Translation: the extent list a resync rewrites.
#include "translation.hpp"

#include <gtest/gtest.h>

#include <map>

using mrsync::Extent;
using mrsync::kNoBacking;
using mrsync::detail::Translation;

namespace {

constexpr std::uint64_t P = 4096;

std::map<mrsync::BackingId, std::uint64_t> replace(Translation &t, std::uint64_t off,
						   std::uint64_t len,
						   std::vector<Extent> with)
{
	std::map<mrsync::BackingId, std::uint64_t> displaced;
	t.replace(off, len, with, [&](mrsync::BackingId b, std::uint64_t n) { displaced[b] += n; });
	return displaced;
}

TEST(Translation, StartsInvalid)
{
	Translation t(4 * P);
	EXPECT_EQ(t.invalid_bytes(), 4 * P);
	ASSERT_EQ(t.extents().size(), 1u);
	EXPECT_EQ(t.extents()[0], (Extent{0, 4 * P, kNoBacking}));
}

TEST(Translation, ReplacingOnePageSplitsAndReportsDisplacedBytes)
{
	Translation t(4 * P);
	replace(t, 0, 4 * P, {{0, 4 * P, 7}});
	auto displaced = replace(t, P, P, {{P, P, 9}});
	EXPECT_EQ(displaced, (std::map<mrsync::BackingId, std::uint64_t>{{7, P}}));
	ASSERT_EQ(t.extents().size(), 3u);
	EXPECT_EQ(t.extents()[0], (Extent{0, P, 7}));
	EXPECT_EQ(t.extents()[1], (Extent{P, P, 9}));
	EXPECT_EQ(t.extents()[2], (Extent{2 * P, 2 * P, 7}));
	EXPECT_EQ(t.invalid_bytes(), 0u);
}

TEST(Translation, NeighboursOfOneBackingMergeBack)
{
	Translation t(4 * P);
	replace(t, 0, 4 * P, {{0, 4 * P, 7}});
	replace(t, P, P, {{P, P, kNoBacking}});
	EXPECT_EQ(t.invalid_bytes(), P);
	replace(t, P, P, {{P, P, 7}});
	ASSERT_EQ(t.extents().size(), 1u);
	EXPECT_EQ(t.extents()[0], (Extent{0, 4 * P, 7}));
}

TEST(Translation, ReplaceAcrossSeveralExtentsAndAtTheEnd)
{
	Translation t(8 * P);
	replace(t, 0, 8 * P, {{0, 2 * P, 1}, {2 * P, 2 * P, 2}, {4 * P, 4 * P, 3}});
	auto displaced = replace(t, P, 6 * P, {{P, 6 * P, 4}});
	EXPECT_EQ(displaced, (std::map<mrsync::BackingId, std::uint64_t>{{1, P}, {2, 2 * P}, {3, 3 * P}}));
	ASSERT_EQ(t.extents().size(), 3u);
	EXPECT_EQ(t.extents()[1], (Extent{P, 6 * P, 4}));
	replace(t, 7 * P, P, {{7 * P, P, 5}});
	EXPECT_EQ(t.extents().back(), (Extent{7 * P, P, 5}));
	std::uint64_t covered = 0;
	for (const auto &e : t.extents()) {
		EXPECT_EQ(e.offset, covered);
		covered += e.length;
	}
	EXPECT_EQ(covered, 8 * P);
}

TEST(Translation, InvalidRunsAreClippedAndMerged)
{
	Translation t(8 * P);
	replace(t, 0, 8 * P, {{0, 8 * P, 1}});
	replace(t, P, P, {{P, P, kNoBacking}});
	replace(t, 2 * P, P, {{2 * P, P, kNoBacking}});
	replace(t, 5 * P, 2 * P, {{5 * P, 2 * P, kNoBacking}});
	auto runs = t.invalid_runs(0, 8 * P);
	ASSERT_EQ(runs.size(), 2u);
	EXPECT_EQ(runs[0], (mrsync::Range{P, 3 * P}));
	EXPECT_EQ(runs[1], (mrsync::Range{5 * P, 7 * P}));
	runs = t.invalid_runs(6 * P, P);
	ASSERT_EQ(runs.size(), 1u);
	EXPECT_EQ(runs[0], (mrsync::Range{6 * P, 7 * P}));
	EXPECT_TRUE(t.invalid_runs(3 * P, 2 * P).empty());
}

TEST(Translation, ForEachBackingSumsBytes)
{
	Translation t(4 * P);
	replace(t, 0, 4 * P, {{0, P, 1}, {P, P, 2}, {2 * P, P, kNoBacking}, {3 * P, P, 1}});
	std::map<mrsync::BackingId, std::uint64_t> seen;
	t.for_each_backing([&](mrsync::BackingId b, std::uint64_t n) { seen[b] += n; });
	EXPECT_EQ(seen, (std::map<mrsync::BackingId, std::uint64_t>{{1, 2 * P}, {2, P}}));
}

} // namespace
