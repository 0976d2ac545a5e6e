// VaTable: the page -> region map the hit path reads.
#include "region.hpp"
#include "va_table.hpp"

#include <gtest/gtest.h>

using mrsync::detail::Region;
using mrsync::detail::VaTable;

namespace {

TEST(VaTable, AssignLookupReplace)
{
	auto table = VaTable::create();
	ASSERT_TRUE(table.ok());
	Region a, b;
	const std::uint64_t base = 0x7f0000000000ull - 0x3000; /* straddles a leaf boundary */
	EXPECT_EQ(table->lookup(base), nullptr);
	ASSERT_TRUE(table->assign(base, base + 0x6000, &a).ok());
	EXPECT_EQ(table->lookup(base), &a);
	EXPECT_EQ(table->lookup(base + 0x5fff), &a);
	EXPECT_EQ(table->lookup(base + 0x6000), nullptr);
	EXPECT_EQ(table->lookup(base - 1), nullptr);

	ASSERT_TRUE(table->assign(base + 0x1000, base + 0x2000, &b).ok());
	table->replace(base, base + 0x6000, &a, nullptr); /* only a's pages */
	EXPECT_EQ(table->lookup(base), nullptr);
	EXPECT_EQ(table->lookup(base + 0x1000), &b);
	EXPECT_EQ(table->lookup(base + 0x4000), nullptr);
}

TEST(VaTable, RefusesAddressesBeyond47Bits)
{
	auto table = VaTable::create();
	ASSERT_TRUE(table.ok());
	EXPECT_EQ(table->lookup(1ull << 47), nullptr);
	EXPECT_EQ(table->lookup(~0ull), nullptr);
	Region a;
	EXPECT_FALSE(table->assign((1ull << 47) - 0x1000, (1ull << 47) + 0x1000, &a).ok());
	EXPECT_FALSE(VaTable::cacheable(0x2000, 0x1000));
}

TEST(VaTable, ReplaceOverAnUntouchedGigabyteIsANoOp)
{
	auto table = VaTable::create();
	ASSERT_TRUE(table.ok());
	Region a;
	table->replace(0x100000000ull, 0x100000000ull + (3ull << 30), &a, nullptr);
	EXPECT_EQ(table->lookup(0x100000000ull), nullptr);
}

} // namespace
