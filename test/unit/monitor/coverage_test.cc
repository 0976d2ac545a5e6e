// SPDX-License-Identifier: MIT
// The reference-counted coverage behind overlapping userfaultfd watches.
#include <gtest/gtest.h>

#include <vector>

#include "coverage.hpp"

namespace {

using mrsync::Range;
using mrsync::detail::Coverage;
using Ranges = std::vector<Range>;

TEST(Coverage, AddThenRemoveReleasesAll)
{
	Coverage coverage;
	coverage.add({0x1000, 0x5000});
	EXPECT_EQ(coverage.all(), (Ranges{{0x1000, 0x5000}}));
	EXPECT_EQ(coverage.remove({0x1000, 0x5000}), (Ranges{{0x1000, 0x5000}}));
	EXPECT_TRUE(coverage.empty());
}

TEST(Coverage, OverlapReleasesOnlyTheUnsharedPart)
{
	Coverage coverage;
	coverage.add({0x0000, 0x4000}); // A
	coverage.add({0x2000, 0x6000}); // B
	EXPECT_EQ(coverage.all(), (Ranges{{0x0000, 0x6000}}));
	// Dropping A frees only what B does not cover.
	EXPECT_EQ(coverage.remove({0x0000, 0x4000}), (Ranges{{0x0000, 0x2000}}));
	EXPECT_EQ(coverage.all(), (Ranges{{0x2000, 0x6000}}));
	EXPECT_EQ(coverage.remove({0x2000, 0x6000}), (Ranges{{0x2000, 0x6000}}));
	EXPECT_TRUE(coverage.empty());
}

TEST(Coverage, SameRangeTwiceNeedsTwoRemoves)
{
	Coverage coverage;
	coverage.add({0x1000, 0x3000});
	coverage.add({0x1000, 0x3000});
	EXPECT_TRUE(coverage.remove({0x1000, 0x3000}).empty());
	EXPECT_EQ(coverage.remove({0x1000, 0x3000}), (Ranges{{0x1000, 0x3000}}));
}

TEST(Coverage, InnerWatchSplitsTheRelease)
{
	Coverage coverage;
	coverage.add({0x0000, 0x8000});
	coverage.add({0x3000, 0x4000});
	EXPECT_EQ(coverage.remove({0x0000, 0x8000}),
		  (Ranges{{0x0000, 0x3000}, {0x4000, 0x8000}}));
	EXPECT_EQ(coverage.all(), (Ranges{{0x3000, 0x4000}}));
}

TEST(Coverage, CoveredClipsAndMerges)
{
	Coverage coverage;
	coverage.add({0x1000, 0x3000});
	coverage.add({0x3000, 0x4000}); // adjacent: merged in the answer
	coverage.add({0x6000, 0x7000});
	EXPECT_EQ(coverage.covered({0x0000, 0x8000}),
		  (Ranges{{0x1000, 0x4000}, {0x6000, 0x7000}}));
	EXPECT_EQ(coverage.covered({0x2000, 0x6800}),
		  (Ranges{{0x2000, 0x4000}, {0x6000, 0x6800}}));
	EXPECT_TRUE(coverage.covered({0x4000, 0x6000}).empty());
	EXPECT_TRUE(coverage.covered({0x5000, 0x5000}).empty());
}

TEST(Coverage, AdjacentWatchesReleaseIndependently)
{
	Coverage coverage;
	coverage.add({0x1000, 0x2000});
	coverage.add({0x2000, 0x3000});
	EXPECT_EQ(coverage.remove({0x2000, 0x3000}), (Ranges{{0x2000, 0x3000}}));
	EXPECT_EQ(coverage.all(), (Ranges{{0x1000, 0x2000}}));
}

} // namespace
