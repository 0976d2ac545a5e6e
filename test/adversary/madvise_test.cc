// madvise() variants on registered private anonymous memory, each followed
// (same thread, after the call returned) by a lookup, a DMA and a check.
//
//   GuardInstallRemove   MADV_GUARD_INSTALL then MADV_GUARD_REMOVE (Linux
//                        6.13+): the first zaps the page, the second makes
//                        the address fault in a fresh zero page.
//   Free / FreeReuse     MADV_FREE, then the CPU writes (reuse) or not
//   DontneedLocked       MADV_DONTNEED_LOCKED
//   ProcessMadvise       process_madvise(self, MADV_DONTNEED)
//   Pageout / Cold       MADV_PAGEOUT / MADV_COLD (pages stay: nothing lost)
//   Collapse             MADV_COLLAPSE of a THP-sized, THP-aligned area
#include <sys/syscall.h>
#include <sys/uio.h>

#include "adversary.hpp"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif
#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace mrsync::test::adversary {
namespace {

constexpr std::size_t kArea = 2u << 20; /* THP-sized */

enum class How { guard, free_noreuse, free_reuse, dontneed_locked, process_madvise, pageout,
		 cold, collapse, populate_write };

struct Case {
	const char *name;
	How how;
};

/* @return 0, or the errno of an advice the kernel does not have (skip). */
int change(std::byte *page, std::size_t len, How how)
{
	auto adv = [&](int advice) { return madvise(page, len, advice) == 0 ? 0 : errno; };
	switch (how) {
	case How::guard:
		if (int e = adv(MADV_GUARD_INSTALL))
			return e;
		return adv(MADV_GUARD_REMOVE);
	case How::free_noreuse:
		return adv(MADV_FREE);
	case How::free_reuse:
		if (int e = adv(MADV_FREE))
			return e;
		std::memset(page, 0x77, len);
		return 0;
	case How::dontneed_locked:
		return adv(MADV_DONTNEED_LOCKED);
	case How::process_madvise: {
		const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0));
		if (pidfd < 0)
			return errno;
		iovec v{page, len};
		const long rc = syscall(SYS_process_madvise, pidfd, &v, 1, MADV_DONTNEED, 0);
		const int e = rc < 0 ? errno : 0;
		close(pidfd);
		return e;
	}
	case How::pageout:
		return adv(MADV_PAGEOUT);
	case How::cold:
		return adv(MADV_COLD);
	case How::collapse:
		return 0; /* whole area, in the test */
	case How::populate_write:
		return adv(MADV_POPULATE_WRITE);
	}
	return 0;
}

void PrintTo(const Case &c, std::ostream *os) { *os << c.name; }

class Madvise : public testing::TestWithParam<Case> {};

TEST_P(Madvise, LosesNothing)
{
	const Case c = GetParam();
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(kArea, 0, kArea);
	ASSERT_TRUE(area);
	if (c.how == How::collapse)
		madvise(area.at(0), kArea, MADV_HUGEPAGE);
	Tally t;
	std::uint64_t skipped_errno = 0;
	const std::uint64_t rounds = iterations(50);
	for (std::uint64_t i = 0; i < rounds; ++i) {
		{ /* the whole area registered and current */
			auto reg = ctx->get(area.at(0), kArea, MRSYNC_ACCESS_LOCAL_WRITE);
			ASSERT_TRUE(reg) << reg.error().message;
		}
		std::byte *const page = area.at((i % 500 + 3) * kPage);
		if (c.how == How::collapse) {
			/* break the area into 4 KiB pages, then collapse it */
			madvise(area.at(kArea / 2), kPage, MADV_DONTNEED);
			std::memset(area.at(kArea / 2), 1, kPage);
			if (madvise(area.at(0), kArea, MADV_COLLAPSE) != 0)
				++skipped_errno;
		} else if (c.how == How::guard && !kmod()) {
			GTEST_SKIP() << "MADV_GUARD_INSTALL zaps without a userfaultfd event: a "
					"documented blind spot (docs/design.md, \"What userfaultfd "
					"cannot see\"); the module sees it";
		} else if (int e = change(page, kPage, c.how)) {
			GTEST_SKIP() << c.name << ": the kernel refuses it: " << std::strerror(e);
		}
		write_check(*ctx, page + 16, 512, t, static_cast<unsigned>(i));
		write_check(*ctx, area.at(kArea / 2 + 32), 512, t, static_cast<unsigned>(i + 7));
	}
	tell(std::string("madvise ") + c.name, t);
	if (skipped_errno)
		std::printf("  (%llu MADV_COLLAPSE calls failed)\n", (unsigned long long)skipped_errno);
	EXPECT_EQ(t.lost, 0u) << c.name << ": DMA writes lost";
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

INSTANTIATE_TEST_SUITE_P(
	Adv, Madvise,
	testing::Values(Case{"GuardInstallRemove", How::guard}, Case{"FreeNoReuse", How::free_noreuse},
			Case{"FreeReuse", How::free_reuse},
			Case{"DontneedLocked", How::dontneed_locked},
			Case{"ProcessMadvise", How::process_madvise}, Case{"Pageout", How::pageout},
			Case{"Cold", How::cold}, Case{"Collapse", How::collapse},
			Case{"PopulateWrite", How::populate_write}),
	[](const auto &info) { return std::string(info.param.name); });

} // namespace
} // namespace mrsync::test::adversary

namespace mrsync::test::adversary {
namespace {

/* MADV_REMOVE on a registered shared memfd mapping: the module sees it;
 * userfaultfd must refuse the memory in the first place. */
TEST(MadviseShared, RemoveOnSharedMemfd)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kLen = 16 * kPage;
	const int fd = memfd_create("mrsync-adv-remove", MFD_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(ftruncate(fd, kLen), 0);
	void *m = mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(m, MAP_FAILED);
	std::byte *const area = static_cast<std::byte *>(m);
	Tally t;
	for (unsigned i = 0; i < iterations(30); ++i) {
		write_check(*ctx, area, kLen, t, i);
		ASSERT_EQ(madvise(area + (i % 16) * kPage, kPage, MADV_REMOVE), 0);
		write_check(*ctx, area + (i % 16) * kPage + 8, 256, t, i + 100);
	}
	tell("MADV_REMOVE on a shared memfd", t);
	munmap(m, kLen);
	close(fd);
	EXPECT_EQ(t.lost, 0u);
	if (kmod())
		EXPECT_EQ(t.delivered, t.lookups) << t.line();
	else
		EXPECT_EQ(t.enotsup, t.lookups) << t.line();
}

} // namespace
} // namespace mrsync::test::adversary

namespace mrsync::test::adversary {
namespace {

/* The mechanism of Adv/Madvise.LosesNothing/GuardInstallRemove: the source's
 * generation does not move for MADV_GUARD_INSTALL (which zaps the page) nor
 * for MADV_GUARD_REMOVE. */
TEST(MadviseGuard, SourceSeesGuardInstall)
{
	if (!kmod())
		GTEST_SKIP() << "userfaultfd gets no event for MADV_GUARD_INSTALL: a documented "
				"blind spot (docs/design.md, \"What userfaultfd cannot see\")";
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(4 * kPage);
	ASSERT_TRUE(area);
	{
		auto reg = ctx->get(area.at(0), 4 * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	const std::uint64_t g0 = mrsync_generation(ctx->c_handle());
	if (madvise(area.at(kPage), kPage, MADV_GUARD_INSTALL) != 0)
		GTEST_SKIP() << "no MADV_GUARD_INSTALL here: " << std::strerror(errno);
	const std::uint64_t g1 = mrsync_generation(ctx->c_handle());
	ASSERT_EQ(madvise(area.at(kPage), kPage, MADV_GUARD_REMOVE), 0);
	const std::uint64_t g2 = mrsync_generation(ctx->c_handle());
	std::printf("adversary guard [%s]: generation %llu -> %llu after MADV_GUARD_INSTALL -> %llu "
		    "after MADV_GUARD_REMOVE\n",
		    stale::source_name(), (unsigned long long)g0, (unsigned long long)g1,
		    (unsigned long long)g2);
	EXPECT_NE(g1, g0) << "MADV_GUARD_INSTALL zapped a registered page and no source said so";
}

} // namespace
} // namespace mrsync::test::adversary
