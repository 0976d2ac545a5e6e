// Bugs the fuzz target (test/fuzz) found in lib/core, each reduced to a few
// C ABI calls, kept as regression tests once fixed.
#include <sys/mman.h>

#include <cstdint>

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

constexpr std::size_t kEntry = 4 * kPage;

/* 4 pages in one 16 KiB translation entry (entry-aligned). */
class EntryAligned {
public:
	EntryAligned() : reservation_(2 * kEntry)
	{
		const auto at = reinterpret_cast<std::uintptr_t>(reservation_.at(0));
		base_ = reinterpret_cast<std::byte *>((at + kEntry - 1) & ~(kEntry - 1));
	}
	std::byte *page(std::size_t i) const { return base_ + i * kPage; }

private:
	Mapping reservation_;
	std::byte *base_;
};

/* entry_size > page size: a lookup that re-pins an entry with a hole in it
 * points the page table at the region for the *whole* entry, hole included
 * (Context::get_slow assigns [align_down(addr, entry), align_up(addr + len,
 * entry)) while the translation it just built is page-grained). A later get
 * of the unmapped page then hits and hands out a key for memory that is not
 * mapped, instead of -EFAULT; DMA through it is refused by the device. */
TEST(FuzzFinding, EntrySizeHoleGetsAKeyForAnUnmappedPage)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_MANUAL;
	params.entry_size = kEntry;
	Context ctx = make_context(params);
	EntryAligned buf;

	ASSERT_TRUE(ctx.get(buf.page(1), 64).ok()); /* registers the whole entry */
	ASSERT_EQ(munmap(buf.page(0), kPage), 0);    /* page 0 leaves */
	ASSERT_EQ(mmap(buf.page(0), kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
		  buf.page(0)); /* (a guard, so nothing else lands there) */
	ASSERT_TRUE(ctx.notify_unmap(buf.page(0), kPage).ok());
	ASSERT_TRUE(ctx.get(buf.page(1), 64).ok()); /* resync, re-pin pages 1-3 */

	auto reg = ctx.get(buf.page(0), 64);
	ASSERT_FALSE(reg.ok()) << "a key for an unmapped page: lkey " << reg->lkey();
	EXPECT_EQ(reg.error().code, EFAULT);
}

} // namespace
} // namespace mrsync::test
