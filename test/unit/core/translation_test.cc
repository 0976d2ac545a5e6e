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

/* A new registration's translation adopts what the pin returned (no splice,
 * no second allocation) and must come out exactly as the splice makes it:
 * merged runs, the same invalid bytes; a list that does not tile falls back
 * to the splice. */
TEST(Translation, OfAdoptsAPinsExtentsAsTheSpliceWould)
{
	const std::vector<std::vector<Extent>> cases = {
		{{0, P, 1}, {P, P, 1}, {2 * P, P, kNoBacking}, {3 * P, 0, 7}, {3 * P, P, kNoBacking},
		 {4 * P, 2 * P, 2}},
		{{0, 6 * P, kNoBacking}},
		{{0, 6 * P, 3}},
		{{0, P, 1}, {2 * P, 4 * P, 2}}, /* a gap: not a tiling */
		{{0, P, 1}},                     /* too short */
	};
	for (const auto &extents : cases) {
		Translation spliced(6 * P);
		replace(spliced, 0, 6 * P, extents);
		const Translation adopted = Translation::of(6 * P, std::vector<Extent>(extents));
		ASSERT_EQ(adopted.extents().size(), spliced.extents().size());
		for (std::size_t i = 0; i < adopted.extents().size(); ++i) {
			EXPECT_EQ(adopted.extents()[i].offset, spliced.extents()[i].offset) << i;
			EXPECT_EQ(adopted.extents()[i].length, spliced.extents()[i].length) << i;
			EXPECT_EQ(adopted.extents()[i].backing, spliced.extents()[i].backing) << i;
		}
		EXPECT_EQ(adopted.invalid_bytes(), spliced.invalid_bytes());
		EXPECT_EQ(adopted.length(), 6 * P);
	}
}

} // namespace

/* The in-place splice (issue 14) against a page-by-page model: after every
 * random change the list must serve each page by the model's backing, stay
 * the shortest list (no two adjacent extents of one backing), report exactly
 * the displaced bytes and keep invalid_bytes() right. A splice that forgets a
 * neighbour, a remainder or a merge fails one of these within a few steps. */
TEST(Translation, RandomSplicesMatchAPageModel)
{
	constexpr std::uint64_t kPages = 64;
	Translation t(kPages * P);
	std::vector<mrsync::BackingId> model(kPages, kNoBacking);
	std::uint64_t seed = 0x5eed;
	auto next = [&seed](std::uint64_t n) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		return (seed >> 33) % n;
	};
	for (int step = 0; step < 2000; ++step) {
		const std::uint64_t first = next(kPages), count = 1 + next(kPages - first);
		std::vector<Extent> with;
		std::map<mrsync::BackingId, std::uint64_t> expect;
		for (std::uint64_t p = first; p < first + count;) {
			const std::uint64_t run = 1 + next(std::min<std::uint64_t>(4, first + count - p));
			/* few backings, so merges happen often */
			const mrsync::BackingId b = next(4) == 0 ? kNoBacking : mrsync::BackingId(next(3));
			with.push_back({p * P, run * P, b});
			p += run;
		}
		for (std::uint64_t p = first; p < first + count; ++p)
			if (model[p] != kNoBacking)
				expect[model[p]] += P;
		for (const Extent &w : with)
			for (std::uint64_t p = w.offset / P; p < (w.offset + w.length) / P; ++p)
				model[p] = w.backing;
		ASSERT_EQ(replace(t, first * P, count * P, with), expect) << "step " << step;
		std::uint64_t at = 0, invalid = 0;
		for (std::size_t i = 0; i < t.extents().size(); ++i) {
			const Extent &e = t.extents()[i];
			ASSERT_EQ(e.offset, at) << "step " << step;
			if (i)
				ASSERT_NE(e.backing, t.extents()[i - 1].backing) << "not merged, step " << step;
			for (std::uint64_t p = e.offset / P; p < (e.offset + e.length) / P; ++p)
				ASSERT_EQ(e.backing, model[p]) << "page " << p << ", step " << step;
			if (e.backing == kNoBacking)
				invalid += e.length;
			at += e.length;
		}
		ASSERT_EQ(at, kPages * P);
		ASSERT_EQ(t.invalid_bytes(), invalid) << "step " << step;
	}
}
