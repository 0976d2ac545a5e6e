/* SPDX-License-Identifier: MIT */
/* driver_arg validation: each bad field is refused with EINVAL and a message
 * naming it; good ones come back defaulted. And a context asking for the
 * vfio driver where it cannot run gets ENODEV, not a crash. */
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <mrsync/mrsync.h>
#include <mrsync/vfio.h>

#include "vfio_pvt.hpp"

namespace {

using mrsync::vfio::parse_params;

void expect_refused(const mrsync_vfio_params &p, const char *field)
{
	auto o = parse_params(&p);
	ASSERT_FALSE(o.ok()) << field;
	EXPECT_EQ(o.error().code, EINVAL);
	EXPECT_NE(o.error().message.find(field), std::string::npos) << o.error().message;
}

mrsync_vfio_params device(const char *name)
{
	mrsync_vfio_params p = MRSYNC_VFIO_PARAMS_INIT;
	p.device = name;
	return p;
}

} // namespace

TEST(VfioParams, NullArgIsRefused)
{
	auto o = parse_params(nullptr);
	ASSERT_FALSE(o.ok());
	EXPECT_EQ(o.error().code, EINVAL);
	EXPECT_NE(o.error().message.find("driver_arg"), std::string::npos);
}

TEST(VfioParams, BadFieldsAreNamed)
{
	auto p = device("0000:00:04.0");
	p.struct_size = 8;
	expect_refused(p, "struct_size");
	p = device("0000:00:04.0");
	p.flags = 1u << 7;
	expect_refused(p, "flags");
	expect_refused(device(nullptr), "device");
	expect_refused(device(""), "device");
	p = device("0000:00:04.0");
	p.container_fd = 3;
	expect_refused(p, "container_fd");
	p = device("0000:00:04.0");
	p.flags = MRSYNC_VFIO_F_ADOPT_CONTAINER;
	p.container_fd = 3;
	expect_refused(p, "device"); /* both */
	p = device(nullptr);
	p.flags = MRSYNC_VFIO_F_ADOPT_CONTAINER;
	p.container_fd = -1;
	expect_refused(p, "container_fd");
	for (unsigned bits : {1u, 20u, 65u}) {
		p = device("0000:00:04.0");
		p.dma_mask_bits = bits;
		expect_refused(p, "dma_mask_bits");
	}
	p = device("0000:00:04.0");
	p.iova_base = 0x1234;
	expect_refused(p, "iova_base");
	p = device("0000:00:04.0");
	p.dma_mask_bits = 28;
	p.iova_base = 1ull << 28; /* nothing below the mask is left */
	expect_refused(p, "iova_base");
}

TEST(VfioParams, DefaultsAndTheMask)
{
	auto p = device("/dev/vfio/3");
	auto o = parse_params(&p);
	ASSERT_TRUE(o.ok()) << o.error().message;
	EXPECT_EQ(o->device, "/dev/vfio/3");
	EXPECT_FALSE(o->adopt);
	EXPECT_EQ(o->iova_base, 1ull << 20);
	EXPECT_EQ(o->iova_limit, UINT64_MAX);
	p.dma_mask_bits = 28; /* QEMU's edu */
	p.iova_limit = 1ull << 40;
	o = parse_params(&p);
	ASSERT_TRUE(o.ok());
	EXPECT_EQ(o->iova_limit, 1ull << 28);
	mrsync_vfio_params a = MRSYNC_VFIO_PARAMS_INIT;
	a.flags = MRSYNC_VFIO_F_ADOPT_CONTAINER; /* fd 0 is a valid fd to adopt */
	o = parse_params(&a);
	ASSERT_TRUE(o.ok()) << o.error().message;
	EXPECT_TRUE(o->adopt);
	EXPECT_EQ(o->container_fd, 0);
}

/* Through the C ABI: without VFIO (the host) the context is refused with
 * ENODEV and a reason; where VFIO is there, a device that does not exist is
 * refused with ENODEV naming it. Either way nothing is created. */
TEST(VfioParams, ContextWithoutTheDeviceIsRefused)
{
	mrsync_vfio_params vp = device("0000:7f:1f.7");
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "vfio";
	p.driver_arg = &vp;
	p.sources = MRSYNC_SOURCE_MANUAL;
	mrsync_ctx *ctx = nullptr;
	EXPECT_EQ(mrsync_ctx_create(&p, &ctx), -ENODEV);
	EXPECT_EQ(ctx, nullptr);
	const std::string why = mrsync_last_error();
	const bool no_vfio = access("/dev/vfio/vfio", F_OK) != 0;
	EXPECT_NE(why.find(no_vfio ? "/dev/vfio/vfio" : "0000:7f:1f.7"), std::string::npos) << why;
}
