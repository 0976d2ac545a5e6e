/* SPDX-License-Identifier: MIT */
/* struct mrsync_mlx5_params as the driver reads it (no device needed: the
 * arguments are read before one is opened): the defaults, the holes flag
 * that test/hw/mlx5's "poison refusal" finding calls for, the struct of the
 * size before `flags`, and clear errors for what it cannot be. */
#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "hw_device.hpp"

namespace mrsync::mlx5 {
namespace {

TEST(Mlx5Params, NoParamsAndTheInitializerMeanTheHardwareRefusesThroughAHole)
{
	auto none = driver_options(nullptr);
	ASSERT_TRUE(none);
	EXPECT_TRUE(none->driver.poison_refused);
	EXPECT_FALSE(none->fallback_verbs);
	mrsync_mlx5_params p = MRSYNC_MLX5_PARAMS_INIT;
	auto init = driver_options(&p);
	ASSERT_TRUE(init);
	EXPECT_TRUE(init->driver.poison_refused);
	EXPECT_EQ(init->driver.fence_timeout, DriverOptions{}.fence_timeout);
	EXPECT_FALSE(init->fallback_verbs);
}

TEST(Mlx5Params, TheHolesFlagMakesAKeyWithAHoleFree)
{
	mrsync_mlx5_params p = MRSYNC_MLX5_PARAMS_INIT;
	p.flags = MRSYNC_MLX5_F_HOLES_FREE_KEY;
	p.fence_timeout_ms = 250;
	auto o = driver_options(&p);
	ASSERT_TRUE(o);
	EXPECT_FALSE(o->driver.poison_refused);
	EXPECT_EQ(o->driver.fence_timeout, std::chrono::milliseconds(250));
}

TEST(Mlx5Params, AStructOfTheSizeBeforeFlagsReadsNoFlags)
{
	/* What a caller built against the older header passes: its struct ends
	 * before `flags`, and whatever lies beyond it is not the caller's. */
	mrsync_mlx5_params p = MRSYNC_MLX5_PARAMS_INIT;
	p.struct_size = MRSYNC_MLX5_PARAMS_SIZE_V1;
	p.flags = 0xdeadbeef;
	auto o = driver_options(&p);
	ASSERT_TRUE(o) << o.error().message;
	EXPECT_TRUE(o->driver.poison_refused);
	EXPECT_FALSE(o->fallback_verbs);
}

TEST(Mlx5Params, BadSizesAndUnknownFlagsAreRefusedByName)
{
	mrsync_mlx5_params p = MRSYNC_MLX5_PARAMS_INIT;
	p.struct_size = 4;
	auto small = driver_options(&p);
	ASSERT_FALSE(small);
	EXPECT_EQ(small.error().code, EINVAL);
	EXPECT_NE(small.error().message.find("struct_size"), std::string::npos)
		<< small.error().message;
	p = MRSYNC_MLX5_PARAMS_INIT;
	p.flags = MRSYNC_MLX5_F_HOLES_FREE_KEY | MRSYNC_MLX5_F_FALLBACK_VERBS | 0x80;
	auto unknown = driver_options(&p);
	ASSERT_FALSE(unknown);
	EXPECT_EQ(unknown.error().code, EINVAL);
	EXPECT_NE(unknown.error().message.find("flags has unknown bits 0x80"), std::string::npos)
		<< unknown.error().message;
}

/* The fallback is the application's choice, and only for a device that is
 * there but lacks a capability: no device, or a bad argument, stays an error. */
TEST(Mlx5Params, TheVerbsFallbackIsTakenOnlyWhenAskedAndOnlyForAMissingCapability)
{
	mrsync_mlx5_params p = MRSYNC_MLX5_PARAMS_INIT;
	const Error lacking{EOPNOTSUPP, "mlx5 on mlx5_0: umr_indirect_mkey_disabled is set"};
	auto off = driver_options(&p);
	ASSERT_TRUE(off);
	EXPECT_FALSE(falls_back_to_verbs(*off, lacking));
	p.flags = MRSYNC_MLX5_F_FALLBACK_VERBS;
	auto on = driver_options(&p);
	ASSERT_TRUE(on);
	EXPECT_TRUE(on->fallback_verbs);
	EXPECT_TRUE(falls_back_to_verbs(*on, lacking));
	EXPECT_FALSE(falls_back_to_verbs(*on, Error{ENODEV, "mlx5: no mlx5 device"}));
	EXPECT_FALSE(falls_back_to_verbs(*on, Error{EINVAL, "mlx5 create: bad"}));
}

} // namespace
} // namespace mrsync::mlx5
