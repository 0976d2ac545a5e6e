/* SPDX-License-Identifier: MIT */
/* An RDMA unpin marks the pages DMA wrote dirty (unpin_user_pages_dirty_lock);
 * io_uring's does not. The difference shows after MADV_FREE: the kernel may
 * discard a clean lazily-freed page, and with it what DMA wrote after the
 * free. The HCA dirties what DMA wrote when it unpins, so those bytes stay;
 * the negative control (dirty_on_unpin = false) loses them. */
#include "uring_test_util.hpp"

#include <sys/mman.h>

#include <cstring>

namespace mrsync::uring::test {
namespace {

/* The application frees the page lazily, then reuses it: a registration
 * pins the lazily-freed page, DMA writes into it, the registration ends,
 * and memory pressure (MADV_PAGEOUT) reclaims what is clean.
 * @return whether the application still sees what DMA wrote. */
bool dma_after_madv_free_survives_reclaim(Hca &hca)
{
	Pages mem(1);
	EXPECT_TRUE(mem.ok());
	std::memset(mem.at(0), 'A', kPage);
	EXPECT_EQ(::madvise(mem.at(0), kPage, MADV_FREE), 0);

	auto pinned = hca.pin(mem.va(), kPage);
	EXPECT_TRUE(pinned) << pinned.error().message;
	const BackingId b = pinned.value();
	const Extent t[] = {{0, kPage, b}};
	auto created = hca.create(mem.va(), kPage, MRSYNC_ACCESS_ALL, t);
	EXPECT_TRUE(created) << created.error().message;
	const Keys keys = created.value();
	std::vector<std::byte> bytes(256, std::byte{'D'});
	EXPECT_EQ(write_sync(hca, keys.lkey, mem.va() + 512, bytes), 256);
	EXPECT_EQ(std::memcmp(mem.at(0) + 512, bytes.data(), bytes.size()), 0)
		<< "the DMA itself did not land";
	hca.destroy(keys);
	EXPECT_TRUE(hca.fence());
	hca.unpin(b);
	EXPECT_TRUE(hca.wait_releases());

	EXPECT_EQ(::madvise(mem.at(0), kPage, MADV_PAGEOUT), 0);
	return std::memcmp(mem.at(0) + 512, bytes.data(), bytes.size()) == 0;
}

using UringDirty = UringTest;

TEST_F(UringDirty, DmaIntoALazilyFreedPageSurvivesItsUnpin)
{
	EXPECT_TRUE(dma_after_madv_free_survives_reclaim(*hca))
		<< "reclaim discarded the page DMA wrote: the unpin left it clean";
}

class UringDirtyNegativeControl : public UringTest {
protected:
	void SetUp() override
	{
		options_.dirty_on_unpin = false;
		UringTest::SetUp();
	}
};

TEST_F(UringDirtyNegativeControl, IoUringsOwnUnpinLosesTheBytes)
{
	EXPECT_FALSE(dma_after_madv_free_survives_reclaim(*hca))
		<< "the control kept the bytes: the test above could not fail";
}

} // namespace
} // namespace mrsync::uring::test
