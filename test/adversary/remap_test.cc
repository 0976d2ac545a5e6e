// mremap, mmap and munmap games on a registered range. Each round: the whole
// area is looked up (so every entry is current), the memory is changed, and
// after the change returned the changed pages and an untouched one are each
// looked up, DMA-written and checked.
//
//   ShrinkGrowInPlace     mremap 16 -> 8 pages, then back to 16 in place
//   MoveAwayAndBack       mremap to a scratch place and back (same pages)
//   GrowMoving            mremap 16 -> 64 pages where it cannot grow in place
//   DontUnmap             MREMAP_DONTUNMAP: the old range stays, empty
//   DontUnmapBack         MREMAP_DONTUNMAP away, then MREMAP_FIXED back over it
//   MoveInto              another mapping mremap'ed over the middle of the range
//   MoveIntoHole          unmap the middle, mremap another mapping into the hole
//   HoleRefilledByThread  one thread unmaps a page, another maps a new one there
//   MprotectGames         PROT_READ / PROT_NONE / back, with a DONTNEED in between
#include <pthread.h>

#include <thread>

#include "adversary.hpp"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

namespace mrsync::test::adversary {
namespace {

constexpr std::size_t kPages = 16;
constexpr std::size_t kLen = kPages * kPage;

enum class How { shrink_grow, move_back, grow_moving, dontunmap, dontunmap_back, move_into,
		 move_into_hole, hole_by_thread, mprotect_games };
struct Case {
	const char *name;
	How how;
};
void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

std::byte *fresh(std::size_t len, std::byte value)
{
	void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return nullptr;
	std::memset(p, static_cast<int>(value), len);
	return static_cast<std::byte *>(p);
}

class Remap : public testing::TestWithParam<Case> {};

TEST_P(Remap, LosesNothing)
{
	const Case c = GetParam();
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	/* a 64-page reservation; the area is its first 16 pages, with a guard
	 * mapping right after it for the cases that must not grow in place */
	void *res = mmap(nullptr, 64 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(res, MAP_FAILED);
	std::byte *const area = static_cast<std::byte *>(res);
	std::byte *const scratch = area + 32 * kPage;
	ASSERT_TRUE(remap_fresh(area, kLen));
	Tally changed, untouched, other;
	std::byte *moved = nullptr; /* where GrowMoving/DontUnmap put the pages */
	std::size_t moved_len = 0;
	const std::uint64_t rounds = iterations(40);
	for (std::uint64_t i = 0; i < rounds; ++i) {
		const unsigned seed = static_cast<unsigned>(i * 10);
		{
			auto reg = ctx->get(area, kLen);
			ASSERT_TRUE(reg) << "round " << i << ": " << reg.error().message;
		}
		std::memset(area, 0x5c, kLen);
		switch (c.how) {
		case How::shrink_grow:
			ASSERT_EQ(mremap(area, kLen, kLen / 2, 0), static_cast<void *>(area));
			ASSERT_EQ(mremap(area, kLen / 2, kLen, 0), static_cast<void *>(area))
				<< std::strerror(errno);
			break;
		case How::move_back:
			ASSERT_EQ(mremap(area, kLen, kLen, MREMAP_MAYMOVE | MREMAP_FIXED, scratch),
				  static_cast<void *>(scratch));
			ASSERT_EQ(mremap(scratch, kLen, kLen, MREMAP_MAYMOVE | MREMAP_FIXED, area),
				  static_cast<void *>(area));
			/* keep the reservation's scratch part reserved */
			ASSERT_EQ(mmap(scratch, kLen, PROT_NONE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
				  static_cast<void *>(scratch));
			break;
		case How::grow_moving: {
			/* something right after the area: it cannot grow in place */
			void *moved_to = mremap(area, kLen, 4 * kLen, MREMAP_MAYMOVE);
			ASSERT_NE(moved_to, MAP_FAILED) << std::strerror(errno);
			ASSERT_NE(moved_to, static_cast<void *>(area));
			moved = static_cast<std::byte *>(moved_to);
			moved_len = 4 * kLen;
			ASSERT_TRUE(remap_fresh(area, kLen)); /* new memory at the old place */
			break;
		}
		case How::dontunmap: {
			void *moved_to = mremap(area, kLen, kLen, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, nullptr);
			ASSERT_NE(moved_to, MAP_FAILED) << std::strerror(errno);
			moved = static_cast<std::byte *>(moved_to);
			moved_len = kLen;
			break;
		}
		case How::dontunmap_back: {
			void *moved_to = mremap(area, kLen, kLen, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, nullptr);
			ASSERT_NE(moved_to, MAP_FAILED) << std::strerror(errno);
			std::memset(area, 0x61, kLen); /* fresh pages in the old range */
			ASSERT_EQ(mremap(moved_to, kLen, kLen, MREMAP_MAYMOVE | MREMAP_FIXED, area),
				  static_cast<void *>(area));
			break;
		}
		case How::move_into: {
			std::byte *o = fresh(4 * kPage, std::byte{0x99});
			ASSERT_NE(o, nullptr);
			ASSERT_EQ(mremap(o, 4 * kPage, 4 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED,
					 area + 4 * kPage),
				  static_cast<void *>(area + 4 * kPage));
			break;
		}
		case How::move_into_hole: {
			/* allocated first: mmap must not pick the hole itself */
			std::byte *o = fresh(4 * kPage, std::byte{0x98});
			ASSERT_NE(o, nullptr);
			ASSERT_EQ(munmap(area + 4 * kPage, 4 * kPage), 0);
			ASSERT_EQ(mremap(o, 4 * kPage, 4 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED,
					 area + 4 * kPage),
				  static_cast<void *>(area + 4 * kPage));
			break;
		}
		case How::hole_by_thread: {
			std::thread([&] { ASSERT_EQ(munmap(area + 4 * kPage, 4 * kPage), 0); }).join();
			std::thread([&] {
				void *p = mmap(area + 4 * kPage, 4 * kPage, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
				ASSERT_EQ(p, static_cast<void *>(area + 4 * kPage));
			}).join();
			break;
		}
		case How::mprotect_games: {
			ASSERT_EQ(mprotect(area + 4 * kPage, 4 * kPage, PROT_READ), 0);
			/* read-only: the registration keeps the same pages */
			mrsync_reg reg;
			if (mrsync_get(ctx->c_handle(), area + 4 * kPage, 64, MRSYNC_ACCESS_LOCAL_WRITE,
				       &reg) == 0)
				mrsync_put(ctx->c_handle(), &reg);
			ASSERT_EQ(mprotect(area + 4 * kPage, 4 * kPage, PROT_NONE), 0);
			ASSERT_EQ(madvise(area + 5 * kPage, kPage, MADV_DONTNEED), 0);
			ASSERT_EQ(mprotect(area + 4 * kPage, 4 * kPage, PROT_READ), 0);
			if (mrsync_get(ctx->c_handle(), area + 5 * kPage, 64, MRSYNC_ACCESS_LOCAL_WRITE,
				       &reg) == 0) { /* a read-only page cannot be pinned for write */
				ADD_FAILURE() << "a lookup of a read-only page that changed worked";
				mrsync_put(ctx->c_handle(), &reg);
			}
			ASSERT_EQ(mprotect(area + 4 * kPage, 4 * kPage, PROT_READ | PROT_WRITE), 0);
			break;
		}
		}
		/* the changed part, and an untouched page */
		for (std::size_t p : {4u, 5u, 7u, 12u, 15u})
			write_check(*ctx, area + p * kPage + 8, 300, changed, seed + p);
		write_check(*ctx, area + 1 * kPage + 40, 300, untouched, seed + 1);
		if (moved) {
			for (std::size_t p : {0u, 3u})
				write_check(*ctx, moved + p * kPage + 8, 300, other, seed + 50 + p);
			write_check(*ctx, moved + moved_len - kPage, 256, other, seed + 60);
			ASSERT_EQ(munmap(moved, moved_len), 0);
			moved = nullptr;
		}
	}
	tell(std::string("remap ") + c.name + " changed pages", changed);
	tell(std::string("remap ") + c.name + " untouched page", untouched);
	if (other.lookups)
		tell(std::string("remap ") + c.name + " moved pages", other);
	munmap(area, 64 * kPage);
	for (const Tally *t : {&changed, &untouched, &other}) {
		EXPECT_EQ(t->lost, 0u) << c.name << ": lost writes: " << t->line();
		EXPECT_EQ(t->delivered, t->lookups) << c.name << ": " << t->line();
	}
}

INSTANTIATE_TEST_SUITE_P(
	Adv, Remap,
	testing::Values(Case{"ShrinkGrowInPlace", How::shrink_grow},
			Case{"MoveAwayAndBack", How::move_back}, Case{"GrowMoving", How::grow_moving},
			Case{"DontUnmap", How::dontunmap}, Case{"DontUnmapBack", How::dontunmap_back},
			Case{"MoveInto", How::move_into}, Case{"MoveIntoHole", How::move_into_hole},
			Case{"HoleRefilledByThread", How::hole_by_thread},
			Case{"MprotectGames", How::mprotect_games}),
	[](const auto &info) { return std::string(info.param.name); });

} // namespace
} // namespace mrsync::test::adversary
