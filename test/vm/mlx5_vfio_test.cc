/* SPDX-License-Identifier: MIT */
/*
 * The mlx5 driver's VFIO mode (drivers/mlx5/vfio_mode.hpp) in the QEMU
 * guest: drivers/vfio allocates the IOVAs and maps them into a real IOMMU
 * (intel-iommu; the container of QEMU's edu device on vfio-pci, adopted),
 * and the MTT mkey is the model's (mtt_mkey_model.hpp), created once per
 * registration. A write through key + address is translated by the model's
 * MTT to an IOVA, and the edu device DMAs it through the IOMMU: what lands
 * is what the IOMMU maps there. The kernel module is the event source.
 *
 * The claim: pages of a registration replaced one by one (mmap MAP_FIXED),
 * each followed by a lookup and a write through the first key: every write
 * lands, the key and the IOVAs never change, the MTT is written once.
 * Negative control: the same with the IOMMU rewrite skipped
 * (test_skip_iommu_rewrite): the writes land in the replaced pages (lost).
 * Without the edu device or the module: exit 77 (host), failure (guest).
 */
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <cstring>

#include <mrsync/mlx5_vfio.h>
#include <mrsync/mrsync.hpp>

#include "edu.hpp"
#include "vfio_model_driver.hpp"

namespace {

using mrsync::mlx5::MttMkeyModel;
using mrsync::test::Edu;
using mrsync::test::holds;
using mrsync::test::map_pages;
using mrsync::test::pattern;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kPages = 6;

Edu *edu; /* opened once: a group opens once at a time */

struct Rig {
	mrsync::mlx5::VfioModelArg arg;
	std::optional<mrsync::Context> ctx;

	explicit Rig(bool skip_iommu_rewrite)
	{
		arg.iommu = edu->vfio_params();
		arg.dma = [](std::uint64_t iova, std::span<const std::byte> bytes) {
			return edu->write(iova, bytes);
		};
		arg.mode.test_skip_iommu_rewrite = skip_iommu_rewrite;
		mrsync_params p = MRSYNC_PARAMS_INIT;
		p.driver = "mlx5-vfio-model";
		p.driver_arg = &arg;
		p.sources = MRSYNC_SOURCE_KMOD;
		auto made = mrsync::Context::create(p);
		if (!made) {
			ADD_FAILURE() << made.error().message;
			std::abort();
		}
		ctx.emplace(std::move(*made));
	}
	MttMkeyModel &model() { return mrsync::mlx5::mtt_model_of(ctx->c_handle()); }
};

/* A registration over kPages fresh pages, its key and its first IOVA. */
struct Registered {
	std::byte *buf = map_pages(kPages);
	std::optional<mrsync::Registration> reg;
	std::uint32_t key = 0;
	std::uint64_t iova = 0;

	explicit Registered(Rig &rig)
	{
		auto got = rig.ctx->get(buf, kPages * kPage);
		if (!got) {
			ADD_FAILURE() << got.error().message;
			return;
		}
		key = got->lkey();
		reg.emplace(std::move(*got));
		auto at = rig.model().translate(key, reinterpret_cast<std::uint64_t>(buf));
		if (at)
			iova = *at;
		else
			ADD_FAILURE() << at.error().message;
	}
	~Registered()
	{
		reg.reset(); /* put before the unmap */
		munmap(buf, kPages * kPage);
	}
};

std::uint64_t addr(const void *p) { return reinterpret_cast<std::uint64_t>(p); }

struct Churn {
	unsigned landed = 0, lost = 0, key_changes = 0, iova_moves = 0;
};

/* Replaces each page of [buf, +kPages) in turn, looks the whole range up
 * again and writes through the FIRST key to the replaced page, 64 bytes
 * before its end and across into the next page (two MTT entries). */
Churn churn(Rig &rig, std::byte *buf, std::uint32_t key, std::uint64_t iova)
{
	Churn c;
	for (std::size_t i = 0; i + 1 < kPages; ++i) {
		std::byte *page = buf + i * kPage;
		map_pages(1, page);
		auto reg = rig.ctx->get(buf, kPages * kPage);
		EXPECT_TRUE(reg.ok()) << reg.error().message;
		c.key_changes += reg && (reg->lkey() != key || reg->rkey() != key);
		auto at = rig.model().translate(key, addr(page));
		c.iova_moves += !at || *at != iova + i * kPage;
		const auto data = pattern(300, unsigned(i));
		auto wrote = rig.model().write(key, addr(page + kPage - 64), data);
		EXPECT_TRUE(wrote.ok()) << wrote.error().message;
		(holds(page + kPage - 64, data) ? c.landed : c.lost)++;
	}
	std::printf("mlx5-vfio: %u writes landed, %u lost, %u key changes, %u IOVA moves\n",
		    c.landed, c.lost, c.key_changes, c.iova_moves);
	return c;
}

} // namespace

TEST(Mlx5VfioMode, RemappedPagesGetEveryWriteAndTheKeyAndIovasStay)
{
	Rig rig(false);
	Registered r(rig);
	ASSERT_TRUE(r.reg);
	auto base = mrsync::mlx5::vfio_mode_driver_of(rig.ctx->c_handle()).iova_of({r.key, r.key});
	ASSERT_TRUE(base.ok()) << base.error().message;
	EXPECT_EQ(r.iova, *base); /* the MTT names drivers/vfio's IOVAs */
	EXPECT_LT(r.iova + kPages * kPage, 1ull << Edu::kMaskBits);
	const Churn c = churn(rig, r.buf, r.key, r.iova);
	EXPECT_EQ(c.lost, 0u);
	EXPECT_EQ(c.landed, kPages - 1);
	EXPECT_EQ(c.key_changes, 0u);
	EXPECT_EQ(c.iova_moves, 0u);
	EXPECT_EQ(rig.ctx->stats().key_changes, 0u);
	EXPECT_GE(rig.ctx->stats().entries_invalidated, kPages - 1);
	/* The mkey and its MTT were written once, at the first lookup. */
	EXPECT_EQ(rig.model().mkeys_created(), 1u);
	EXPECT_EQ(rig.model().mtt_entries_written(), kPages);
}

TEST(Mlx5VfioMode, NegativeControlWithoutTheIommuRewriteTheWritesAreLost)
{
	Rig rig(true);
	Registered r(rig);
	ASSERT_TRUE(r.reg);
	/* Control of the control: before any change the write lands. */
	const auto before = pattern(100, 99);
	ASSERT_TRUE(rig.model().write(r.key, addr(r.buf + 3 * kPage), before).ok());
	ASSERT_TRUE(holds(r.buf + 3 * kPage, before));
	const Churn c = churn(rig, r.buf, r.key, r.iova);
	EXPECT_EQ(c.key_changes, 0u); /* the key stays all the same ... */
	EXPECT_EQ(c.lost, kPages - 1) << "without the IOMMU rewrite the writes should land "
					 "in the replaced pages";
}

TEST(Mlx5VfioMode, TheModelRefusesUnknownKeysAndOutOfBoundsWrites)
{
	Rig rig(false);
	Registered r(rig);
	ASSERT_TRUE(r.reg);
	const auto data = pattern(64, 7);
	auto bad_key = rig.model().write(r.key + (1u << 8), addr(r.buf), data);
	ASSERT_FALSE(bad_key.ok());
	EXPECT_EQ(bad_key.error().code, EACCES);
	auto past = rig.model().write(r.key, addr(r.buf + kPages * kPage - 32), data);
	ASSERT_FALSE(past.ok());
	EXPECT_EQ(past.error().code, EACCES);
	for (std::size_t i = 0; i < kPages * kPage; ++i)
		ASSERT_EQ(r.buf[i], std::byte{0}) << "a refused write moved bytes";
}

/* The production kind says why it cannot run (here: no ConnectX on
 * vfio-pci; with one: rdma-core 44 keeps the provider's container and IOVA
 * allocator private), and no context is made. */
TEST(Mlx5VfioMode, TheProductionDriverSaysWhyItIsNotUsable)
{
	const mrsync_vfio_params iommu = edu->vfio_params();
	mrsync_mlx5_vfio_params mp = MRSYNC_MLX5_VFIO_PARAMS_INIT;
	mp.iommu = &iommu;
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "mlx5-vfio";
	p.driver_arg = &mp;
	auto ctx = mrsync::Context::create(p);
	ASSERT_FALSE(ctx.ok());
	EXPECT_EQ(ctx.error().code, ENODEV);
	EXPECT_NE(ctx.error().message.find("no Mellanox function bound to vfio-pci"),
		  std::string::npos) << ctx.error().message;
}

int mrsync_vm_helper(int argc, char **argv)
{
	(void)argc;
	return mrsync::test::open_edu_once(argv[0], edu);
}
