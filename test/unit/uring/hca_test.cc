/* SPDX-License-Identifier: MIT */
/* The uring HCA's translation: the stale-registration bug for real, the
 * page-granular fix through map(), and the refusals that keep a device from
 * writing where no current backing is. */
#include "uring_test_util.hpp"

#include <cerrno>

namespace mrsync::uring::test {
namespace {

using UringHca = UringTest;

TEST_F(UringHca, NameAndCaps)
{
	EXPECT_EQ(hca->name(), "uring");
	const DriverCaps caps = hca->caps();
	EXPECT_EQ(caps.entry_granularity, 4096u);
	EXPECT_EQ(caps.max_backing_bytes, 1ull << 30);
	EXPECT_EQ(caps.max_backings, 16384u);
	EXPECT_TRUE(caps.keys_survive_map);
}

TEST_F(UringHca, RegisteredWithTheDriverRegistry)
{
	const DriverFactory *f = find_driver("uring");
	ASSERT_NE(f, nullptr);
	std::string why;
	EXPECT_TRUE(f->available(why)) << why;
	auto d = f->create(DriverConfig{});
	ASSERT_TRUE(d) << d.error().message;
	EXPECT_EQ((*d)->name(), "uring");
}

/* The bug this project exists for, at driver level: the application maps a
 * fresh page over a registered one; the device keeps writing into the old,
 * still-pinned page and reports success. Pinning the new page and mapping
 * just that entry fixes it, with the same keys and the other pages served
 * by the old backing all along. */
TEST_F(UringHca, RemappedPageLosesWritesUntilItsEntryIsMapped)
{
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	std::memset(mem.at(0), 0x11, mem.bytes());
	const BackingId old = pin(mem.va(), 4 * kPage);
	const Extent whole[] = {{0, 4 * kPage, old}};
	const Keys keys = create(mem.va(), 4 * kPage, whole);

	ASSERT_TRUE(mem.remap(1));
	const auto data = pattern(kPage, 1);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), data), int(kPage))
		<< "the device reports success";
	EXPECT_TRUE(all_bytes(mem.page(1), std::byte{0}))
		<< "the write through the stale slot should have gone to the old page";

	const BackingId fresh = pin(mem.va(1), kPage);
	const Extent split[] = {{0, kPage, old}, {kPage, kPage, fresh}, {2 * kPage, 2 * kPage, old}};
	auto mapped = hca->map(keys, split);
	ASSERT_TRUE(mapped) << mapped.error().message;
	EXPECT_EQ(*mapped, keys) << "keys survive map()";
	ASSERT_TRUE(hca->fence());

	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), data), int(kPage));
	EXPECT_TRUE(same(mem.page(1), data)) << "after map() the write reaches the application";
	for (std::size_t p : {0u, 2u, 3u}) {
		const auto other = pattern(kPage, unsigned(10 + p));
		EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(p), other), int(kPage));
		EXPECT_TRUE(same(mem.page(p), other)) << "page " << p << " via the old backing";
	}
	std::vector<std::byte> back(kPage);
	EXPECT_EQ(read_sync(*hca, keys.lkey, mem.va(1), back), int(kPage));
	EXPECT_TRUE(same(back, data)) << "DMA reads see the new page too";
	EXPECT_EQ(hca->stats().slots_in_use, 2u);
}

/* One request over three extents: three SQEs, one completion, in place. */
TEST_F(UringHca, RequestAcrossExtentsIsOneCompletion)
{
	Pages mem(3);
	ASSERT_TRUE(mem.ok());
	const Extent t[] = {{0, kPage, pin(mem.va(0), kPage)},
			    {kPage, kPage, pin(mem.va(1), kPage)},
			    {2 * kPage, kPage, pin(mem.va(2), kPage)}};
	const Keys keys = create(mem.va(), 3 * kPage, t);
	const auto data = pattern(2 * kPage, 3);
	const auto before = hca->stats();
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(0) + kPage / 2, data), int(2 * kPage));
	EXPECT_TRUE(same({mem.at(0) + kPage / 2, 2 * kPage}, data));
	const auto after = hca->stats();
	EXPECT_EQ(after.sqes - before.sqes, 3u);
	EXPECT_EQ(after.dma_completed - before.dma_completed, 1u);

	std::vector<std::byte> back(2 * kPage);
	EXPECT_EQ(read_sync(*hca, keys.lkey, mem.va(0) + kPage / 2, back), int(2 * kPage));
	EXPECT_TRUE(same(back, data));
}

/* An invalid entry faults: the request completes with -EFAULT and nothing
 * is written anywhere, not even to the valid pages it also covers. */
TEST_F(UringHca, InvalidExtentRefusesTheWholeRequest)
{
	Pages mem(3);
	ASSERT_TRUE(mem.ok());
	std::memset(mem.at(0), 0x22, mem.bytes());
	const Extent t[] = {{0, kPage, pin(mem.va(0), kPage)},
			    {kPage, kPage, kNoBacking},
			    {2 * kPage, kPage, pin(mem.va(2), kPage)}};
	const Keys keys = create(mem.va(), 3 * kPage, t);
	const auto data = pattern(2 * kPage, 4);

	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), {data.data(), kPage}), -EFAULT);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(0), data), -EFAULT);
	EXPECT_TRUE(all_bytes({mem.at(0), mem.bytes()}, std::byte{0x22})) << "memory untouched";

	std::vector<std::byte> dst(kPage, std::byte{0x77});
	EXPECT_EQ(read_sync(*hca, keys.lkey, mem.va(1), dst), -EFAULT);
	EXPECT_TRUE(all_bytes(dst, std::byte{0x77})) << "a refused read leaves dst alone";
	EXPECT_EQ(hca->stats().dma_refused, 3u);

	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(2), {data.data(), kPage}), int(kPage));
	EXPECT_TRUE(same(mem.page(2), {data.data(), kPage})) << "valid entries still work";
}

TEST_F(UringHca, RequestsOutsideTheRegistrationOrKeyAreRefused)
{
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	std::memset(mem.at(0), 0x33, mem.bytes());
	const BackingId b = pin(mem.va(), 4 * kPage);
	/* The registration is pages 1..2; the backing covers 0..3. */
	const Extent t[] = {{0, 2 * kPage, b}};
	const Keys keys = create(mem.va(1), 2 * kPage, t);
	const auto data = pattern(2 * kPage, 5);
	const std::span<const std::byte> one(data.data(), kPage);

	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(0), one), -EFAULT) << "before the start";
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(3), one), -EFAULT) << "past the end";
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(2), data), -EFAULT) << "straddling the end";
	EXPECT_EQ(write_sync(*hca, keys.lkey, UINT64_MAX - 100, one), -EFAULT) << "wrapping";
	EXPECT_EQ(write_sync(*hca, keys.lkey + 1000, mem.va(1), one), -EINVAL) << "unknown key";
	EXPECT_TRUE(all_bytes({mem.at(0), mem.bytes()}, std::byte{0x33}));
	EXPECT_EQ(hca->stats().dma_refused, 5u);

	hca->destroy(keys);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), one), -EINVAL) << "destroyed key";
}

TEST_F(UringHca, WriteNeedsWriteAccess)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	const Extent t[] = {{0, kPage, pin(mem.va(), kPage)}};
	auto keys = hca->create(mem.va(), kPage, MRSYNC_ACCESS_REMOTE_READ, t);
	ASSERT_TRUE(keys) << keys.error().message;
	const auto data = pattern(kPage, 6);
	EXPECT_EQ(write_sync(*hca, keys->lkey, mem.va(), data), -EACCES);
	std::vector<std::byte> back(kPage);
	EXPECT_EQ(read_sync(*hca, keys->lkey, mem.va(), back), int(kPage));
}

/* A backing unpinned while a translation still names it (a core bug) is
 * refused by the driver even once its slot serves a new pin of the same
 * address: the id carries the slot's generation. */
TEST_F(UringHca, RetiredBackingIsRefusedEvenWhenItsSlotIsReused)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	const BackingId old = pin(mem.va(), kPage);
	const Extent t[] = {{0, kPage, old}};
	const Keys keys = create(mem.va(), kPage, t);
	hca->unpin(old);
	ASSERT_TRUE(hca->wait_releases());
	const BackingId again = pin(mem.va(), kPage);
	EXPECT_NE(again, old);
	EXPECT_EQ(again & 0x3fff, old & 0x3fff) << "expected the slot to be reused";
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(), pattern(kPage, 7)), -EFAULT);
	EXPECT_EQ(hca->stats().dma_refused, 1u);
}

TEST_F(UringHca, KeysAreNonZeroUniqueAndSurviveMap)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	const BackingId b = pin(mem.va(), 2 * kPage);
	const Extent t[] = {{0, 2 * kPage, b}};
	const Keys a = create(mem.va(), 2 * kPage, t);
	const Keys c = create(mem.va(), 2 * kPage, t);
	EXPECT_NE(a.lkey, 0u);
	EXPECT_EQ(a.lkey, a.rkey);
	EXPECT_NE(a.lkey, c.lkey);
	hca->destroy(a);
	const Keys d = create(mem.va(), 2 * kPage, t);
	EXPECT_NE(d.lkey, a.lkey) << "a destroyed key is not handed out again";
	const Extent halves[] = {{0, kPage, b}, {kPage, kPage, kNoBacking}};
	auto m = hca->map(c, halves);
	ASSERT_TRUE(m) << m.error().message;
	EXPECT_EQ(*m, c);
	EXPECT_EQ(hca->stats().registrations, 2u);
}

} // namespace
} // namespace mrsync::uring::test
