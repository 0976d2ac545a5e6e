/* SPDX-License-Identifier: MIT */
/* The translation diff decides every MAP_DMA and UNMAP_DMA: only entries
 * whose validity changed, merged into runs; a new backing over still-valid
 * pages (compaction) is no change for the IOMMU. */
#include <gtest/gtest.h>

#include <vector>

#include "vfio_pvt.hpp"

using mrsync::Extent;
using mrsync::kNoBacking;
using mrsync::vfio::Change;
using mrsync::vfio::invalidated;
using mrsync::vfio::validity_changes;

namespace {
constexpr std::uint64_t P = 4096;
}

TEST(VfioDiff, CreateMapsTheValidRuns)
{
	const std::vector<Extent> none{{0, 8 * P, kNoBacking}};
	const std::vector<Extent> now{{0, 2 * P, 1}, {2 * P, P, kNoBacking}, {3 * P, 5 * P, 2}};
	EXPECT_EQ(validity_changes(none, now),
		  (std::vector<Change>{{0, 2 * P, true}, {3 * P, 5 * P, true}}));
}

TEST(VfioDiff, OnePageInvalidatedInsideABigMapping)
{
	const std::vector<Extent> before{{0, 1024 * P, 7}};
	const std::vector<Extent> after{{0, 500 * P, 7}, {500 * P, P, kNoBacking},
					{501 * P, 523 * P, 7}};
	EXPECT_EQ(validity_changes(before, after), (std::vector<Change>{{500 * P, P, false}}));
	/* and the lookup that maps it again */
	const std::vector<Extent> again{{0, 500 * P, 7}, {500 * P, P, 9}, {501 * P, 523 * P, 7}};
	EXPECT_EQ(validity_changes(after, again), (std::vector<Change>{{500 * P, P, true}}));
}

TEST(VfioDiff, CompactionIsNoChange)
{
	const std::vector<Extent> before{{0, 2 * P, 1}, {2 * P, P, 3}, {3 * P, P, 1}};
	const std::vector<Extent> after{{0, 4 * P, 4}};
	EXPECT_TRUE(validity_changes(before, after).empty());
}

TEST(VfioDiff, AdjacentChangesMerge)
{
	const std::vector<Extent> before{{0, P, 1}, {P, P, 2}, {2 * P, P, kNoBacking}};
	const std::vector<Extent> after{{0, 3 * P, kNoBacking}};
	EXPECT_EQ(validity_changes(before, after), (std::vector<Change>{{0, 2 * P, false}}));
}

TEST(VfioDiff, UndoneMapsLeaveTheirRangesInvalid)
{
	const std::vector<Extent> after{{0, 4 * P, 1}, {4 * P, 2 * P, kNoBacking}, {6 * P, 2 * P, 2}};
	const std::vector<Change> undone{{P, P, true}, {6 * P, 2 * P, true}};
	EXPECT_EQ(invalidated(after, undone),
		  (std::vector<Extent>{{0, P, 1}, {P, P, kNoBacking}, {2 * P, 2 * P, 1},
				       {4 * P, 4 * P, kNoBacking}}));
	EXPECT_EQ(invalidated(after, {}), after);
}
