// The guards that keep every pin current (issue 9): what a hint and a lookup
// may re-pin, and which memory a source must refuse. The lost writes these
// guards prevent are counted by test/stale and the torture; this checks the
// rules themselves, with MRSYNC_CTX_F_TEST_UNGUARDED_PINS as the control
// that shows each check can fail.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

std::uint64_t at(const void *p) { return reinterpret_cast<std::uint64_t>(p); }

/* The invalid bytes of the registration that starts at `addr`. */
std::uint64_t invalid_bytes_at(Context &ctx, const void *addr)
{
	struct Find {
		std::uint64_t addr;
		std::uint64_t invalid = UINT64_MAX;
	} find{at(addr)};
	mrsync_for_each_region(
		ctx.c_handle(),
		[](void *arg, const mrsync_region_info *info) {
			auto *f = static_cast<Find *>(arg);
			if (info->addr == f->addr)
				f->invalid = info->invalid_bytes;
		},
		&find);
	return find.invalid;
}

class PinGuard : public ::testing::TestWithParam<bool> {
protected:
	bool guarded() const { return GetParam(); }
	std::uint32_t flags() const { return guarded() ? 0 : MRSYNC_CTX_F_TEST_UNGUARDED_PINS; }
};

/* A hint warms the cache; it must not re-pin a page that changed, which may
 * still be changing (MADV_DONTNEED is reported before the zap). */
TEST_P(PinGuard, HintDoesNotRepinAChangedPage)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_UFFD, flags());
	ASSERT_TRUE(ctx.hint(m.at(0), 4 * kPage).ok());
	ASSERT_EQ(madvise(m.at(kPage), kPage, MADV_DONTNEED), 0);
	ASSERT_TRUE(ctx.resync().ok());
	ASSERT_EQ(ctx.stats().invalid_bytes, kPage);
	const auto before = ctx.stats();
	ASSERT_TRUE(ctx.hint(m.at(0), 4 * kPage).ok());
	const auto after = ctx.stats();
	if (!guarded()) {
		EXPECT_EQ(after.invalid_bytes, 0u) << "control: the old hint re-pins";
		return;
	}
	EXPECT_EQ(after.entries_repinned, before.entries_repinned);
	EXPECT_EQ(after.invalid_bytes, kPage);
	/* A lookup that needs the page pins it. */
	auto reg = ctx.get(m.at(kPage + 8), 8);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	EXPECT_EQ(ctx.stats().entries_repinned, before.entries_repinned + 1);
}

/* A hint that creates a registration leaves out the pages another one
 * left invalid; a lookup's new registration pins what it covers. */
TEST_P(PinGuard, NewRegistrationOfAHintSkipsPagesThatChanged)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_UFFD, flags());
	ASSERT_TRUE(ctx.hint(m.at(kPage), 2 * kPage).ok());
	ASSERT_EQ(madvise(m.at(2 * kPage), kPage, MADV_DONTNEED), 0);
	ASSERT_TRUE(ctx.resync().ok());
	ASSERT_TRUE(ctx.hint(m.at(0), 4 * kPage).ok());
	EXPECT_EQ(invalid_bytes_at(ctx, m.at(0)), guarded() ? kPage : 0u);
	auto reg = ctx.get(m.at(0), 4 * kPage);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	EXPECT_EQ(invalid_bytes_at(ctx, m.at(0)), 0u) << "a lookup pins every page it covers";
	const auto bytes = pattern(64, 7);
	EXPECT_EQ(dma_write(hca_of(ctx), reg->lkey(), m.at(2 * kPage), bytes), 64);
	EXPECT_TRUE(sees(m.at(2 * kPage), bytes));
}

/* A driver that serves no registration with a hole (verbs): a lookup of an
 * intact page of a registration where another page was MADV_DONTNEED'd --
 * userfaultfd cannot tell when that zap ends -- gets a new registration of
 * just its request instead of a re-pin of the page that may be changing. */
TEST_P(PinGuard, DenseDriverDoesNotRepinAPageThatMayBeChanging)
{
	Mapping m(4 * kPage);
	ASSERT_TRUE(m);
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_UFFD;
	params.driver = "fake_rekey_dense"; /* caller_cache_test.cc */
	params.flags = flags();
	auto created = Context::create(params);
	ASSERT_TRUE(created.ok()) << created.error().message;
	Context ctx = std::move(created).value();
	ASSERT_TRUE(ctx.get(m.at(0), 4 * kPage).ok());
	ASSERT_EQ(madvise(m.at(2 * kPage), kPage, MADV_DONTNEED), 0);
	ASSERT_TRUE(ctx.resync().ok());
	const auto before = ctx.stats();
	auto page0 = ctx.get(m.at(0), 64);
	ASSERT_TRUE(page0.ok()) << page0.error().message;
	if (!guarded()) {
		EXPECT_EQ(page0->length(), 4 * kPage) << "control: the old way re-pins the hole";
		return;
	}
	EXPECT_EQ(ctx.stats().entries_repinned, before.entries_repinned)
		<< "the page being zapped was re-pinned for a lookup that did not ask for it";
	EXPECT_EQ(page0->length(), kPage) << "a new registration covers just the request";
	/* The lookup that needs the page pins it. */
	auto page2 = ctx.get(m.at(2 * kPage), 64);
	ASSERT_TRUE(page2.ok()) << page2.error().message;
}

/* userfaultfd cannot settle a pin, so it refuses entries larger than a page:
 * a lookup would pin the neighbours in its entries, which may be changing. */
TEST(UffdRefuses, EntriesLargerThanAPage)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_UFFD;
	params.driver = "uring";
	params.entry_size = 4 * kPage;
	mrsync_ctx *ctx = nullptr;
	EXPECT_EQ(mrsync_ctx_create(&params, &ctx), -EINVAL);
	EXPECT_NE(std::string(mrsync_last_error()).find("entry_size"), std::string::npos)
		<< mrsync_last_error();
	params.sources = MRSYNC_SOURCE_UFFD | MRSYNC_SOURCE_MANUAL; /* the application vouches */
	EXPECT_EQ(mrsync_ctx_create(&params, &ctx), 0) << mrsync_last_error();
	mrsync_ctx_destroy(&ctx);
}

INSTANTIATE_TEST_SUITE_P(, PinGuard, ::testing::Values(true, false),
			 [](const auto &info) { return info.param ? "guarded" : "unguarded"; });

/* A memfd, mapped shared: its pages change through the file without any
 * unmap (fallocate PUNCH_HOLE), and userfaultfd reports none of it. */
struct SharedMemfd {
	SharedMemfd(std::size_t len, unsigned extra = 0) : len(len)
	{
		fd = memfd_create("mrsync-pin-guard", MFD_CLOEXEC | extra);
		if (fd < 0 || ftruncate(fd, off_t(len)) != 0)
			return;
		void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		base = p == MAP_FAILED ? nullptr : static_cast<std::byte *>(p);
	}
	~SharedMemfd()
	{
		if (base)
			munmap(base, len);
		if (fd >= 0)
			close(fd);
	}
	std::size_t len;
	int fd = -1;
	std::byte *base = nullptr;
};

int raw_get(Context &ctx, const void *addr, std::size_t len, mrsync_reg &reg)
{
	return mrsync_get(ctx.c_handle(), addr, len, MRSYNC_ACCESS_LOCAL_WRITE, &reg);
}

TEST(UffdRefuses, SharedMemoryItCannotSee)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	SharedMemfd memfd(4 * kPage);
	ASSERT_TRUE(memfd.base);
	mrsync_reg reg{};
	EXPECT_EQ(raw_get(ctx, memfd.base, kPage, reg), -ENOTSUP);
	const std::string why = mrsync_last_error();
	EXPECT_NE(why.find("shared mapping"), std::string::npos) << why;
	EXPECT_NE(why.find("mrsync-pin-guard"), std::string::npos) << "names the mapping: " << why;
	EXPECT_NE(why.find("kernel module"), std::string::npos) << why;
	EXPECT_EQ(mrsync_hint(ctx.c_handle(), memfd.base, kPage, MRSYNC_ACCESS_LOCAL_WRITE),
		  -ENOTSUP);

	void *shared_anon = mmap(nullptr, kPage, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(shared_anon, MAP_FAILED);
	EXPECT_EQ(raw_get(ctx, shared_anon, kPage, reg), -ENOTSUP) << mrsync_last_error();
	munmap(shared_anon, kPage);
	EXPECT_EQ(ctx.stats().regions, 0u);
}

TEST(UffdRefuses, PrivateFileMappings)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	char path[] = "/tmp/mrsync-pin-guard-XXXXXX";
	const int fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	unlink(path);
	ASSERT_EQ(ftruncate(fd, kPage), 0);
	void *p = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	ASSERT_NE(p, MAP_FAILED);
	mrsync_reg reg{};
	EXPECT_EQ(raw_get(ctx, p, kPage, reg), -ENOTSUP) << mrsync_last_error();
	munmap(p, kPage);
	close(fd);
}

/* What uffd can see: private anonymous memory, huge pages included. */
TEST(UffdRefuses, NotPrivateAnonymousMemory)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	Mapping small(kPage);
	auto reg = ctx.get(small.at(0), kPage);
	EXPECT_TRUE(reg.ok()) << reg.error().message;
	if (meminfo("HugePages_Free:") < 1)
		GTEST_SKIP() << "no free huge page";
	Mapping huge(kHugePage, MAP_HUGETLB);
	ASSERT_TRUE(huge);
	auto hreg = ctx.get(huge.at(0), kHugePage);
	EXPECT_TRUE(hreg.ok()) << hreg.error().message;
}

/* A registered anonymous page replaced by SysV shm: the next lookup is
 * refused (not served from a pin nothing would keep current), and works
 * again once the page is anonymous again. */
TEST(UffdRefuses, AnonymousPageReplacedByShm)
{
	Mapping m(2 * kPage);
	ASSERT_TRUE(m);
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	ASSERT_TRUE(ctx.hint(m.at(0), 2 * kPage).ok());
	const int id = shmget(IPC_PRIVATE, kPage, IPC_CREAT | 0600);
	ASSERT_GE(id, 0);
	ASSERT_EQ(munmap(m.at(kPage), kPage), 0);
	void *shm = shmat(id, m.at(kPage), 0);
	shmctl(id, IPC_RMID, nullptr);
	ASSERT_EQ(shm, m.at(kPage)) << std::strerror(errno);
	mrsync_reg reg{};
	EXPECT_EQ(raw_get(ctx, m.at(kPage), 64, reg), -ENOTSUP) << mrsync_last_error();
	EXPECT_NE(std::string(mrsync_last_error()).find("kernel module"), std::string::npos)
		<< mrsync_last_error();
	auto page0 = ctx.get(m.at(0), 64);
	EXPECT_TRUE(page0.ok()) << "the untouched page still works: " << page0.error().message;

	ASSERT_EQ(shmdt(shm), 0);
	ASSERT_TRUE(remap_fresh(m.at(kPage), kPage));
	auto back = ctx.get(m.at(kPage), 64);
	ASSERT_TRUE(back.ok()) << back.error().message;
	const auto bytes = pattern(64, 3);
	EXPECT_EQ(dma_write(hca_of(ctx), back->lkey(), m.at(kPage), bytes), 64);
	EXPECT_TRUE(sees(m.at(kPage), bytes));
}

/* Another source that sees every change (the application's own reports)
 * makes shared memory acceptable; so does the unguarded control. */
TEST(UffdRefuses, UnlessAnotherSourceSeesIt)
{
	SharedMemfd memfd(kPage);
	ASSERT_TRUE(memfd.base);
	using Setup = std::pair<std::uint32_t, std::uint32_t>; /* sources, flags */
	for (auto [sources, flags] : {Setup{MRSYNC_SOURCE_UFFD | MRSYNC_SOURCE_MANUAL, 0},
				      Setup{MRSYNC_SOURCE_UFFD, MRSYNC_CTX_F_TEST_UNGUARDED_PINS}}) {
		Context ctx = make_context(sources, flags);
		auto reg = ctx.get(memfd.base, kPage);
		EXPECT_TRUE(reg.ok()) << reg.error().message;
	}
}

} // namespace
} // namespace mrsync::test
