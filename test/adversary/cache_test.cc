// The cache's own machinery under an application's churn: several contexts,
// eviction, overlapping registrations, ring overflow, compaction, the
// userfaultfd + manual source mix, lookups spanning two kinds of mapping.
// Every change returns before the lookup that follows it (same thread).
#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

/* One of the ways an application changes a page it owns; returns false if
 * the call failed (counted, not a loss). */
bool change_page(std::byte *page, unsigned how)
{
	switch (how % 4) {
	case 0:
		return madvise(page, kPage, MADV_DONTNEED) == 0;
	case 1:
		return remap_fresh(page, kPage);
	case 2: {
		if (munmap(page, kPage) != 0)
			return false;
		void *p = mmap(page, kPage, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		return p == page;
	}
	default: {
		/* a fresh page moved in over it */
		void *o = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (o == MAP_FAILED)
			return false;
		std::memset(o, 0x3c, kPage);
		return mremap(o, kPage, kPage, MREMAP_MAYMOVE | MREMAP_FIXED, page) == page;
	}
	}
}

TEST(Contexts, TwoContextsSameMemory)
{
	auto a = open();
	auto b = open();
	ASSERT_TRUE(a) << a.error().message;
	ASSERT_TRUE(b) << b.error().message;
	constexpr std::size_t kLen = 16 * kPage;
	Mapping area(kLen);
	ASSERT_TRUE(area);
	Tally ta, tb;
	for (unsigned i = 0; i < iterations(20); ++i) {
		write_check(*a, area.at(0), kLen, ta, i);
		write_check(*b, area.at(0), kLen, tb, i + 100);
		change_page(area.at((i % 16) * kPage), i);
		write_check(*a, area.at((i % 16) * kPage), 256, ta, i + 200);
		write_check(*b, area.at((i % 16) * kPage), 256, tb, i + 300);
	}
	tell("two contexts, first", ta);
	tell("two contexts, second", tb);
	EXPECT_EQ(ta.lost + tb.lost, 0u);
	EXPECT_EQ(ta.delivered, ta.lookups) << ta.line();
	if (kmod()) {
		EXPECT_EQ(tb.delivered, tb.lookups)
			<< "the second context over the same memory: " << tb.line();
		return;
	}
	/* The kernel lets one userfaultfd watch a mapping: the second context
	 * is refused with a clear error (mrsync.h, mrsync_get: -EBUSY). */
	EXPECT_EQ(tb.other, tb.lookups) << tb.line();
	EXPECT_NE(tb.first_other.find("another userfaultfd"), std::string::npos) << tb.first_other;
}

/* Small max_regions: every lookup evicts; pages change in between. */
void churn(Context &ctx, std::vector<std::byte *> &bufs, std::size_t buf_len, std::minstd_rand &rng,
	   std::uint64_t rounds, Tally &t, unsigned seed_base)
{
	for (std::uint64_t i = 0; i < rounds; ++i) {
		std::byte *buf = bufs[rng() % bufs.size()];
		const std::size_t page = rng() % (buf_len / kPage);
		if (rng() % 3 == 0)
			change_page(buf + page * kPage, static_cast<unsigned>(rng()));
		/* narrow, two-page or whole-buffer lookups */
		switch (rng() % 3) {
		case 0:
			write_check(ctx, buf + page * kPage + 64, 128, t, seed_base + unsigned(i));
			break;
		case 1:
			if (page + 1 < buf_len / kPage) {
				write_check(ctx, buf + page * kPage + kPage - 100, 200, t,
					    seed_base + unsigned(i));
				break;
			}
			[[fallthrough]];
		default:
			write_check(ctx, buf, buf_len, t, seed_base + unsigned(i));
		}
	}
}

TEST(Eviction, SmallCacheUnderChurn)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.max_regions = 3;
	auto ctx = open(params);
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kBuf = 8 * kPage;
	Mapping area(24 * kBuf);
	ASSERT_TRUE(area);
	std::vector<std::byte *> bufs;
	for (std::size_t i = 0; i < 24; ++i)
		bufs.push_back(area.at(i * kBuf));
	std::minstd_rand rng(1);
	Tally t;
	churn(*ctx, bufs, kBuf, rng, iterations(3000), t, 0);
	tell("eviction, max_regions=3", t);
	const auto s = ctx->stats();
	std::printf("  evictions=%llu resyncs=%llu full_resyncs=%llu regions=%llu\n",
		    (unsigned long long)s.evictions, (unsigned long long)s.resyncs,
		    (unsigned long long)s.full_resyncs, (unsigned long long)s.regions);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

TEST(Eviction, TwoThreadsSmallCache)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.max_regions = 4;
	params.max_registered_bytes = 64 * kPage;
	auto ctx = open(params);
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kBuf = 8 * kPage;
	Mapping area(32 * kBuf);
	ASSERT_TRUE(area);
	Tally t[2];
	std::vector<std::thread> threads;
	for (unsigned w = 0; w < 2; ++w)
		threads.emplace_back([&, w] {
			std::vector<std::byte *> mine; /* each thread owns half the buffers */
			for (std::size_t i = w; i < 32; i += 2)
				mine.push_back(area.at(i * kBuf));
			std::minstd_rand rng(10 + w);
			churn(*ctx, mine, kBuf, rng, iterations(2000), t[w], 1'000'000 * (w + 1));
		});
	for (auto &th : threads)
		th.join();
	t[0].add(t[1]);
	tell("eviction, 2 threads, max_regions=4, 64 pages", t[0]);
	EXPECT_EQ(t[0].lost, 0u);
	/* ENOSPC is allowed here only if both threads held everything */
	EXPECT_EQ(t[0].delivered + t[0].other, t[0].lookups) << t[0].line();
	EXPECT_EQ(t[0].other, 0u) << t[0].line();
}

TEST(Overlap, WideThenNarrowAndAccessVariants)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kPagesN = 64;
	Mapping area(kPagesN * kPage);
	ASSERT_TRUE(area);
	std::minstd_rand rng(3);
	Tally t;
	const std::uint32_t accesses[] = {MRSYNC_ACCESS_LOCAL_WRITE, MRSYNC_ACCESS_ALL,
					  MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_READ};
	for (std::uint64_t i = 0; i < iterations(2000); ++i) {
		/* registrations of odd shapes, overlapping each other */
		const std::size_t a = rng() % kPagesN, n = 1 + rng() % (kPagesN - a);
		if (rng() % 2) {
			(void)mrsync_hint(ctx->c_handle(), area.at(a * kPage), n * kPage,
					  accesses[rng() % 3]);
		} else {
			mrsync_reg reg;
			if (mrsync_get(ctx->c_handle(), area.at(a * kPage), n * kPage,
				       accesses[rng() % 3], &reg) == 0)
				mrsync_put(ctx->c_handle(), &reg);
		}
		if (rng() % 4 == 0)
			change_page(area.at((rng() % kPagesN) * kPage), static_cast<unsigned>(rng()));
		/* a checked write somewhere, of 1..5 pages */
		const std::size_t p = rng() % kPagesN;
		const std::size_t len = std::min<std::size_t>((1 + rng() % 5) * kPage - 200,
							      (kPagesN - p) * kPage - 100);
		write_check(*ctx, area.at(p * kPage + 100), len, t, unsigned(i));
	}
	tell("overlapping registrations", t);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

TEST(Ring, OverflowOfOneEntry)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.ring_entries = 1;
	auto ctx = open(params);
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kPagesN = 128;
	Mapping area(kPagesN * kPage);
	ASSERT_TRUE(area);
	Tally t;
	for (std::uint64_t i = 0; i < iterations(30); ++i) {
		{
			auto reg = ctx->get(area.at(0), kPagesN * kPage);
			ASSERT_TRUE(reg) << reg.error().message;
		}
		/* many disjoint changes before the next lookup */
		for (std::size_t p = i % 2; p < kPagesN; p += 2)
			change_page(area.at(p * kPage), static_cast<unsigned>(p + i));
		for (std::size_t p = 0; p < kPagesN; p += 3)
			write_check(*ctx, area.at(p * kPage + 8), 200, t, unsigned(i * 1000 + p));
	}
	tell("ring of 1 entry", t);
	const auto s = ctx->stats();
	std::printf("  resyncs=%llu full_resyncs=%llu\n", (unsigned long long)s.resyncs,
		    (unsigned long long)s.full_resyncs);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

TEST(Compaction, RacingChanges)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.compact_threshold = 4096; /* compact after nearly every resync */
	auto ctx = open(params);
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kPagesN = 256;
	Mapping area(kPagesN * kPage);
	ASSERT_TRUE(area);
	{
		auto reg = ctx->get(area.at(0), kPagesN * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	std::atomic<bool> stop{false};
	std::thread compactor([&] {
		while (!stop.load()) {
			(void)mrsync_compact(ctx->c_handle());
			(void)mrsync_resync(ctx->c_handle());
		}
	});
	Tally t[2];
	std::vector<std::thread> workers;
	for (unsigned w = 0; w < 2; ++w)
		workers.emplace_back([&, w] {
			std::minstd_rand rng(20 + w);
			for (std::uint64_t i = 0; i < iterations(1500); ++i) {
				/* worker w owns the pages p with p % 2 == w */
				const std::size_t p = (rng() % (kPagesN / 2)) * 2 + w;
				change_page(area.at(p * kPage), static_cast<unsigned>(rng()));
				write_check(*ctx, area.at(p * kPage + 16), 256, t[w], unsigned(i));
				if (rng() % 8 == 0) { /* a wide lookup of its own pages' neighbours */
					const std::size_t q = (rng() % (kPagesN / 2)) * 2 + w;
					write_check(*ctx, area.at(q * kPage), kPage, t[w], unsigned(i + 7));
				}
			}
		});
	for (auto &th : workers)
		th.join();
	stop = true;
	compactor.join();
	t[0].add(t[1]);
	tell("compaction racing changes", t[0]);
	const auto s = ctx->stats();
	std::printf("  compactions=%llu stale_pinned_bytes=%llu\n", (unsigned long long)s.compactions,
		    (unsigned long long)s.stale_pinned_bytes);
	EXPECT_EQ(t[0].lost, 0u);
	EXPECT_EQ(t[0].delivered, t[0].lookups) << t[0].line();
}

/* A memfd of `len` bytes mapped shared. */
std::byte *shared_memfd(std::size_t len, int &fd)
{
	fd = memfd_create("mrsync-adv-shared", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, static_cast<off_t>(len)) != 0)
		return nullptr;
	void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	return p == MAP_FAILED ? nullptr : static_cast<std::byte *>(p);
}

TEST(Mix, UffdPlusManual)
{
	if (kmod())
		GTEST_SKIP() << "the userfaultfd + manual mix is for hosts without the module";
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_UFFD | MRSYNC_SOURCE_MANUAL;
	auto ctx = open(params);
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kLen = 16 * kPage;
	Mapping anon(kLen);
	int fd = -1;
	std::byte *shm = shared_memfd(kLen, fd);
	ASSERT_TRUE(anon);
	ASSERT_NE(shm, nullptr);
	Tally ta, ts;
	for (std::uint64_t i = 0; i < iterations(40); ++i) {
		write_check(*ctx, anon.at(0), kLen, ta, unsigned(i));
		write_check(*ctx, shm, kLen, ts, unsigned(i + 50));
		/* anonymous: userfaultfd's to see, no notification */
		change_page(anon.at((i % 16) * kPage), unsigned(i));
		write_check(*ctx, anon.at((i % 16) * kPage), 256, ta, unsigned(i + 100));
		/* shared: the application reports what it does */
		ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    static_cast<off_t>((i % 16) * kPage), kPage), 0);
		ASSERT_EQ(mrsync_notify_unmap(ctx->c_handle(), shm + (i % 16) * kPage, kPage), 0);
		write_check(*ctx, shm + (i % 16) * kPage, 256, ts, unsigned(i + 200));
		/* the anonymous page replaced by the shared one and back: both
		 * sources' business */
		ASSERT_EQ(mmap(anon.at(3 * kPage), kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
			       fd, 0),
			  static_cast<void *>(anon.at(3 * kPage)));
		write_check(*ctx, anon.at(3 * kPage), 256, ts, unsigned(i + 300));
		ASSERT_TRUE(remap_fresh(anon.at(3 * kPage), kPage));
		write_check(*ctx, anon.at(3 * kPage), 256, ta, unsigned(i + 400));
	}
	tell("uffd+manual, anonymous", ta);
	tell("uffd+manual, shared (notified)", ts);
	munmap(shm, kLen);
	close(fd);
	EXPECT_EQ(ta.lost + ts.lost, 0u);
	EXPECT_EQ(ta.delivered, ta.lookups) << ta.line();
	EXPECT_EQ(ts.delivered, ts.lookups) << ts.line();
}

TEST(Span, AnonymousAndShared)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	/* [anonymous page][shared memfd page], adjacent */
	void *res = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			 0);
	ASSERT_NE(res, MAP_FAILED);
	std::byte *const a = static_cast<std::byte *>(res);
	const int fd = memfd_create("mrsync-adv-span", MFD_CLOEXEC);
	ASSERT_EQ(ftruncate(fd, kPage), 0);
	ASSERT_EQ(mmap(a + kPage, kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0),
		  static_cast<void *>(a + kPage));
	Tally t;
	write_check(*ctx, a, 2 * kPage, t, 1);
	write_check(*ctx, a, kPage, t, 2);
	/* a registration of the anonymous page alone, then its neighbour changes
	 * to shared memory under a wide registration */
	Tally later;
	Mapping area(4 * kPage);
	ASSERT_TRUE(area);
	write_check(*ctx, area.at(0), 4 * kPage, later, 3);
	ASSERT_EQ(mmap(area.at(kPage), kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0),
		  static_cast<void *>(area.at(kPage)));
	write_check(*ctx, area.at(0), 4 * kPage, later, 4);   /* spans it */
	write_check(*ctx, area.at(0), 100, later, 5);         /* anonymous page only */
	write_check(*ctx, area.at(kPage), 100, later, 6);     /* the shared page */
	write_check(*ctx, area.at(kPage - 50), 100, later, 7); /* two pages, one shared */
	tell("span anonymous+shared", t);
	tell("anonymous registration, a page turned shared", later);
	close(fd);
	munmap(a, 2 * kPage);
	EXPECT_EQ(t.lost + later.lost, 0u);
	if (kmod()) {
		/* Debian 6.1's io_uring pins no buffer that spans two kinds of
		 * mapping (EINVAL from the driver's pin): only the lookups of one
		 * mapping must work there */
		EXPECT_EQ(t.delivered + t.other, t.lookups) << t.line();
		EXPECT_GE(t.delivered, 1u) << t.line();
		EXPECT_EQ(later.delivered, later.lookups) << later.line();
	} else {
		/* userfaultfd: what includes shared memory is refused, the rest served */
		EXPECT_EQ(t.enotsup, 1u) << t.line();
		EXPECT_EQ(t.delivered, 1u) << t.line();
		EXPECT_EQ(later.delivered, 2u) << later.line();
		EXPECT_EQ(later.enotsup, 3u) << later.line();
	}
}

} // namespace
} // namespace mrsync::test::adversary
