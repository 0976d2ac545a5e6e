/* SPDX-License-Identifier: MIT */
/* The IOVA allocator: first fit inside the ranges it was given, aligned,
 * never across a removed hole, ENOSPC when full, and freed space merges. */
#include <gtest/gtest.h>

#include "iova_space.hpp"

using mrsync::vfio::IovaSpace;

TEST(IovaSpace, FirstFitAlignedInsideTheRanges)
{
	IovaSpace s;
	s.add(0x100000, 1ull << 28); /* edu: below 256 MiB */
	auto a = s.alloc(0x3000, 0x1000);
	ASSERT_TRUE(a.ok());
	EXPECT_EQ(*a, 0x100000u);
	auto b = s.alloc(0x10000, 0x10000);
	ASSERT_TRUE(b.ok());
	EXPECT_EQ(*b, 0x110000u); /* aligned past a */
	EXPECT_EQ(s.available(), (1ull << 28) - 0x100000 - 0x3000 - 0x10000);
}

TEST(IovaSpace, SkipsReservedHolesAndRunsOut)
{
	IovaSpace s;
	s.add(0, 0x10000);
	s.remove(0x4000, 0x8000); /* e.g. an MSI window the IOMMU reserves */
	auto a = s.alloc(0x9000, 0x1000);
	ASSERT_FALSE(a.ok()); /* 0x4000 + 0x8000 free, never contiguous */
	EXPECT_EQ(a.error().code, ENOSPC);
	auto b = s.alloc(0x8000, 0x1000);
	ASSERT_TRUE(b.ok());
	EXPECT_EQ(*b, 0x8000u);
	s.free(*b, 0x8000);
	s.add(0x4000, 0x8000);
	auto c = s.alloc(0x10000, 0x1000); /* merged back into one range */
	ASSERT_TRUE(c.ok());
	EXPECT_EQ(*c, 0u);
	EXPECT_EQ(s.available(), 0u);
}
