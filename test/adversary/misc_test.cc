// Hugepage registrations cut up, the heap shrinking under a registration,
// thread stacks, and memory registered while another thread changes it.
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

constexpr std::size_t kHuge = kHugePage;

std::byte *map_huge(std::byte *at, std::size_t len)
{
	void *p = mmap(at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (at ? MAP_FIXED : 0), -1, 0);
	return p == MAP_FAILED ? nullptr : static_cast<std::byte *>(p);
}

TEST(Huge, PartialMunmapAndRefill)
{
	if (auto why = stale::reserve_hugepages(8); !why.empty())
		GTEST_SKIP() << why;
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	std::byte *const area = map_huge(nullptr, 4 * kHuge);
	ASSERT_NE(area, nullptr);
	std::memset(area, 1, 4 * kHuge);
	Tally t, refused;
	for (std::uint64_t i = 0; i < iterations(10); ++i) {
		stale::make_room_for_hugepages(*ctx, 4);
		const unsigned seed = unsigned(i * 100);
		/* the whole area; one hugepage per lookup in the guest, whose 6.1
		 * io_uring pins no buffer spanning two hugetlb files (after a
		 * refill, hugepage 1 is another one) */
		if (kmod()) {
			for (std::size_t h = 0; h < 4; ++h)
				write_check(*ctx, area + h * kHuge, kHuge, t, seed + 10 + unsigned(h));
		} else {
			write_check(*ctx, area, 2 * kHuge, t, seed);
			write_check(*ctx, area + 2 * kHuge, 2 * kHuge, t, seed + 10);
		}
		/* hugepage 1 goes away: its lookups must fail, the others work */
		ASSERT_EQ(munmap(area + kHuge, kHuge), 0);
		write_check(*ctx, area + 100, 1000, t, seed + 1);
		write_check(*ctx, area + 2 * kHuge + 5000, 1000, t, seed + 2);
		lookup_only(*ctx, area + kHuge + 64, 64, refused);
		/* refilled with small pages, then with a hugepage again */
		ASSERT_TRUE(remap_fresh(area + kHuge, kHuge));
		write_check(*ctx, area + kHuge + 3 * kPage, 2000, t, seed + 4);
		if (!kmod()) /* across the seam (6.1's io_uring pins no such buffer) */
			write_check(*ctx, area + kHuge - 100, 200, t, seed + 5);
		stale::make_room_for_hugepages(*ctx, 4);
		ASSERT_EQ(map_huge(area + kHuge, kHuge), area + kHuge) << std::strerror(errno);
		write_check(*ctx, area + kHuge + 7 * kPage, 2000, t, seed + 6);
		/* MADV_DONTNEED of hugepage 2, a lookup of a 4 KiB piece of it */
		ASSERT_EQ(madvise(area + 2 * kHuge, kHuge, MADV_DONTNEED), 0);
		write_check(*ctx, area + 2 * kHuge + 9 * kPage, 512, t, seed + 7);
		if (kmod())
			write_check(*ctx, area + 2 * kHuge, kHuge, t, seed + 8);
		else
			write_check(*ctx, area + kHuge, 2 * kHuge, t, seed + 8);
	}
	tell("hugepages cut up", t);
	tell("hugepages, lookups of an unmapped hugepage", refused);
	munmap(area, 4 * kHuge);
	EXPECT_EQ(t.lost + refused.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
	EXPECT_EQ(refused.efault, refused.lookups) << refused.line();
}

TEST(Huge, SubpageThenWholeHint)
{
	if (auto why = stale::reserve_hugepages(4); !why.empty())
		GTEST_SKIP() << why;
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	std::byte *const area = map_huge(nullptr, 2 * kHuge);
	ASSERT_NE(area, nullptr);
	std::memset(area, 1, 2 * kHuge);
	Tally t;
	for (std::uint64_t i = 0; i < iterations(10); ++i) {
		stale::make_room_for_hugepages(*ctx, 4);
		write_check(*ctx, area + 5 * kPage, 100, t, unsigned(i)); /* a 4 KiB registration */
		ASSERT_EQ(madvise(area, kHuge, MADV_DONTNEED), 0);
		ASSERT_EQ(mrsync_hint(ctx->c_handle(), area, 2 * kHuge, MRSYNC_ACCESS_ALL), 0)
			<< mrsync_last_error();
		write_check(*ctx, area + 77 * kPage, 100, t, unsigned(i + 1000));
		write_check(*ctx, area + 5 * kPage, 100, t, unsigned(i + 2000));
		write_check(*ctx, area + kHuge + 3 * kPage, 100, t, unsigned(i + 3000));
	}
	tell("hugepage: 4 KiB registration, DONTNEED, whole hint", t);
	munmap(area, 2 * kHuge);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

TEST(Heap, BrkShrinkAndRegrow)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Tally t;
	std::uint64_t skipped = 0;
	for (std::uint64_t i = 0; i < iterations(30); ++i) {
		/* grow the heap by 16 pages of our own, page aligned */
		void *top = sbrk(0);
		const std::uintptr_t pad = (kPage - reinterpret_cast<std::uintptr_t>(top) % kPage) % kPage;
		std::byte *const mine = static_cast<std::byte *>(top) + pad;
		if (sbrk(static_cast<intptr_t>(pad + 16 * kPage)) == reinterpret_cast<void *>(-1)) {
			++skipped;
			continue;
		}
		write_check(*ctx, mine, 16 * kPage, t, unsigned(i)); /* registered */
		/* shrink it away and grow it back, if nobody else moved the break */
		if (sbrk(0) != mine + 16 * kPage) {
			++skipped;
			continue;
		}
		ASSERT_EQ(brk(mine), 0);
		ASSERT_EQ(sbrk(static_cast<intptr_t>(16 * kPage)), static_cast<void *>(mine));
		write_check(*ctx, mine + 3 * kPage + 10, 300, t, unsigned(i + 100));
		write_check(*ctx, mine, 16 * kPage, t, unsigned(i + 200));
		if (sbrk(0) == mine + 16 * kPage)
			(void)brk(mine - pad);
	}
	tell("brk shrink + regrow", t);
	if (skipped)
		std::printf("  (%llu rounds skipped: the break moved under us)\n",
			    (unsigned long long)skipped);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

TEST(Threads, StackBuffersAcrossThreadExits)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Tally t;
	std::mutex mu;
	for (std::uint64_t i = 0; i < iterations(100); ++i) {
		std::thread([&, i] {
			alignas(4096) std::byte buf[8 * 4096];
			Tally mine;
			write_check(*ctx, buf, sizeof buf, mine, unsigned(i));
			write_check(*ctx, buf + 4096 + 100, 500, mine, unsigned(i + 1));
			std::lock_guard lock(mu);
			t.add(mine);
		}).join();
		/* a thread exit between: glibc madvises the unused part of its stack */
	}
	tell("stack buffers across thread exits", t);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

/* Thread "changer" owns block C and replaces its pages (mmap over them,
 * mremap over them, munmap + mmap: never MADV_DONTNEED, whose race with a
 * lookup of the same page is documented) while "registrar" threads look up
 * and hint the whole area all the time and DMA into the blocks they own. */
void registered_while_changed(bool holes)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kBlocks = 8, kBlock = 8 * kPage;
	Mapping area(kBlocks * kBlock);
	ASSERT_TRUE(area);
	std::vector<std::mutex> owner(kBlocks);
	std::atomic<bool> stop{false};
	Tally changer_t, reg_t[2];
	std::atomic<std::uint64_t> changes{0};
	std::thread changer([&] {
		std::minstd_rand rng(5);
		for (std::uint64_t i = 0; i < iterations(1500); ++i) {
			const std::size_t b = rng() % kBlocks;
			std::lock_guard own(owner[b]);
			std::byte *const p = area.at(b * kBlock + (rng() % 8) * kPage);
			if (!change_fresh(p, holes ? static_cast<unsigned>(rng()) : 2 * (rng() % 2)))
				continue;
			++changes;
			write_check(*ctx, p + 32, 200, changer_t, unsigned(i));
		}
		stop = true;
	});
	std::vector<std::thread> registrars;
	for (unsigned w = 0; w < 2; ++w)
		registrars.emplace_back([&, w] {
			std::minstd_rand rng(40 + w);
			unsigned seed = 1'000'000 * (w + 1);
			while (!stop.load()) {
				/* the whole area, while the changer changes it */
				if (rng() % 2) {
					(void)mrsync_hint(ctx->c_handle(), area.at(0), kBlocks * kBlock,
							  MRSYNC_ACCESS_ALL);
				} else {
					mrsync_reg reg;
					if (mrsync_get(ctx->c_handle(), area.at(0), kBlocks * kBlock,
						       MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
						mrsync_put(ctx->c_handle(), &reg);
				}
				const std::size_t b = rng() % kBlocks;
				std::lock_guard own(owner[b]);
				write_check(*ctx, area.at(b * kBlock + (rng() % 8) * kPage + 8), 300,
					    reg_t[w], seed++);
			}
		});
	changer.join();
	for (auto &th : registrars)
		th.join();
	reg_t[0].add(reg_t[1]);
	const std::string what = holes ? " (changes include munmap + mmap)" : "";
	tell("changer's own lookups" + what, changer_t);
	tell("registrars' lookups" + what, reg_t[0]);
	std::printf("  changes=%llu (the wide lookups that race them may fail with EFAULT)\n",
		    (unsigned long long)changes.load());
	EXPECT_EQ(changer_t.lost + reg_t[0].lost, 0u);
	EXPECT_EQ(changer_t.delivered, changer_t.lookups) << changer_t.line();
	EXPECT_EQ(reg_t[0].delivered, reg_t[0].lookups) << reg_t[0].line();
}

/* mmap(MAP_FIXED) and mremap over the pages: no hole ever. */
TEST(Threads, RegisteredWhileChanged)
{
	registered_while_changed(false);
}

/* munmap + mmap too: a hole for a moment (see hole_test.cc). */
TEST(Threads, RegisteredWhileChangedWithHoles)
{
	registered_while_changed(true);
}

} // namespace
} // namespace mrsync::test::adversary
