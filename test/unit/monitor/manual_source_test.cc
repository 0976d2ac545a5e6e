// SPDX-License-Identifier: MIT
// The manual source: the application reports its own changes.
#include <gtest/gtest.h>

#include <mrsync/mrsync.h>
#include <mrsync/source.hpp>

#include <cstdint>
#include <vector>

namespace {

using mrsync::Range;

std::uint64_t load(const std::uint64_t *generation)
{
	return __atomic_load_n(generation, __ATOMIC_ACQUIRE);
}

std::unique_ptr<mrsync::EventSource> make_manual()
{
	const mrsync::SourceFactory *factory = mrsync::find_source(MRSYNC_SOURCE_MANUAL);
	if (!factory)
		return nullptr;
	auto source = factory->create({});
	return source ? std::move(*source) : nullptr;
}

TEST(ManualSource, IsRegisteredAndAvailable)
{
	const mrsync::SourceFactory *factory = mrsync::find_source(MRSYNC_SOURCE_MANUAL);
	ASSERT_NE(factory, nullptr);
	EXPECT_STREQ(factory->name, "manual");
	std::string why;
	EXPECT_TRUE(factory->available(why)) << why;
	auto source = make_manual();
	ASSERT_NE(source, nullptr);
	EXPECT_EQ(source->name(), "manual");
}

/* The application's reports reach the manual source through ManualInput,
 * the way Context::notify_unmap() finds it. */
mrsync::ManualInput &input(mrsync::EventSource &source)
{
	return dynamic_cast<mrsync::ManualInput &>(source);
}

TEST(ManualSource, NotifyMovesGenerationAndDrainReturnsRange)
{
	auto source = make_manual();
	ASSERT_NE(source, nullptr);
	const std::uint64_t *generation = source->generation();
	const std::uint64_t before = load(generation);

	ASSERT_TRUE(input(*source).notify({0x10000, 0x12000}));
	EXPECT_NE(load(generation), before);
	EXPECT_EQ(source->generation(), generation) << "the counter must not move";

	std::vector<Range> drained;
	EXPECT_FALSE(source->drain(drained));
	EXPECT_EQ(drained, (std::vector<Range>{{0x10000, 0x12000}}));
	drained.clear();
	EXPECT_FALSE(source->drain(drained));
	EXPECT_TRUE(drained.empty());
}

TEST(ManualSource, BadNotifyIsRejectedWithoutAnEvent)
{
	auto source = make_manual();
	ASSERT_NE(source, nullptr);
	const std::uint64_t before = load(source->generation());
	auto empty = input(*source).notify({0x1000, 0x1000});
	ASSERT_FALSE(empty);
	EXPECT_EQ(empty.error().code, EINVAL);
	auto backwards = input(*source).notify({0x2000, 0x1000});
	ASSERT_FALSE(backwards);
	EXPECT_EQ(backwards.error().code, EINVAL);
	EXPECT_NE(backwards.error().message.find("0x2000"), std::string::npos)
		<< backwards.error().message;
	EXPECT_EQ(load(source->generation()), before);
}

TEST(ManualSource, WatchIsBookkeepingOnly)
{
	auto source = make_manual();
	ASSERT_NE(source, nullptr);
	// Any address will do: nothing is armed in the kernel.
	auto first = source->watch(0x7000'0000'0000, 0x3000);
	auto second = source->watch(0x7000'0000'0000, 0x3000);
	ASSERT_TRUE(first) << first.error().message;
	ASSERT_TRUE(second) << second.error().message;
	EXPECT_NE(*first, *second);
	EXPECT_TRUE(source->prepare_pin(1, {0x7000'0000'0000, 0x7000'0000'3000}));
	source->unwatch(*first);
	source->unwatch(*second);
	source->unwatch(*second); // unknown handle: ignored

	auto zero = source->watch(0x1000, 0);
	ASSERT_FALSE(zero);
	EXPECT_EQ(zero.error().code, EINVAL);
	auto wraps = source->watch(UINT64_MAX - 0xfff, 0x2000);
	ASSERT_FALSE(wraps);
	EXPECT_EQ(wraps.error().code, EINVAL);
}

} // namespace
