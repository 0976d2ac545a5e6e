/* SPDX-License-Identifier: MIT */
/*
 * lib/monitor's kmod source against the real module: the generation word is
 * the module's, drain() returns the changed ranges and reports overflow once,
 * unwatch stops events, prepare_pin() is READ_BEGIN on the watch, and a fork
 * child can still load the generation word while the source refuses to work
 * for it (EBADFD).
 */
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mrsync/mrsync.h>
#include <mrsync/source.hpp>

namespace {

const std::uint64_t kPage = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));

std::unique_ptr<mrsync::EventSource> make_source(std::uint32_t ring_entries = 0)
{
	const mrsync::SourceFactory *factory = mrsync::find_source(MRSYNC_SOURCE_KMOD);
	if (!factory)
		return nullptr;
	auto source = factory->create(mrsync::SourceConfig{ring_entries});
	if (!source) {
		ADD_FAILURE() << source.error().message;
		return nullptr;
	}
	return std::move(source.value());
}

std::uint64_t load(const std::uint64_t *gen)
{
	return __atomic_load_n(gen, __ATOMIC_ACQUIRE);
}

char *map_pages(std::size_t n)
{
	void *p = mmap(nullptr, n * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	return p == MAP_FAILED ? nullptr : static_cast<char *>(p);
}

} // namespace

TEST(KmodSource, IsRegisteredAndAvailable)
{
	const mrsync::SourceFactory *factory = mrsync::find_source(MRSYNC_SOURCE_KMOD);
	ASSERT_NE(factory, nullptr);
	EXPECT_STREQ(factory->name, "kmod");
	std::string why;
	EXPECT_TRUE(factory->available(why)) << why;
}

TEST(KmodSource, ReportsChangesBeforeTheCallReturns)
{
	auto source = make_source();
	ASSERT_NE(source, nullptr);
	EXPECT_EQ(source->name(), "kmod");
	const std::uint64_t *gen = source->generation();
	ASSERT_NE(gen, nullptr);
	EXPECT_EQ(source->generation(), gen);

	char *p = map_pages(8);
	ASSERT_NE(p, nullptr);
	/* an unaligned request covers the pages it touches */
	auto handle = source->watch(reinterpret_cast<std::uint64_t>(p) + 100, 4 * kPage);
	ASSERT_TRUE(handle) << handle.error().message;
	const std::uint64_t g0 = load(gen);
	ASSERT_EQ(munmap(p + kPage, 2 * kPage), 0);
	EXPECT_GT(load(gen), g0);
	std::vector<mrsync::Range> out;
	EXPECT_FALSE(source->drain(out));
	const std::uint64_t base = reinterpret_cast<std::uint64_t>(p);
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0], (mrsync::Range{base + kPage, base + 3 * kPage}));

	/* the page past the request's end (rounded) is not watched */
	out.clear();
	const std::uint64_t g1 = load(gen);
	ASSERT_EQ(munmap(p + 6 * kPage, kPage), 0);
	EXPECT_EQ(load(gen), g1);
	EXPECT_FALSE(source->drain(out));
	EXPECT_TRUE(out.empty());

	source->unwatch(*handle);
	ASSERT_EQ(munmap(p, 8 * kPage), 0);
	EXPECT_EQ(load(gen), g1);
	EXPECT_FALSE(source->drain(out));
	EXPECT_TRUE(out.empty());
}

TEST(KmodSource, BadRangesAreRefused)
{
	auto source = make_source();
	ASSERT_NE(source, nullptr);
	EXPECT_FALSE(source->watch(0x10000, 0));
	EXPECT_FALSE(source->watch(~0ull - 10, 100));
	auto far = source->watch(1ull << 60, kPage);
	ASSERT_FALSE(far);
	EXPECT_EQ(far.error().code, ERANGE);
}

TEST(KmodSource, PreparePinIsReadBeginOnTheWatch)
{
	auto source = make_source();
	ASSERT_NE(source, nullptr);
	char *p = map_pages(4);
	ASSERT_NE(p, nullptr);
	const std::uint64_t base = reinterpret_cast<std::uint64_t>(p);
	auto handle = source->watch(base, 4 * kPage);
	ASSERT_TRUE(handle) << handle.error().message;
	const mrsync::Range range{base, base + 2 * kPage};
	auto ok = source->prepare_pin(*handle, range);
	EXPECT_TRUE(ok) << ok.error().message;
	/* after a change (complete once madvise returns): still at once */
	p[0] = 1;
	ASSERT_EQ(madvise(p, 4 * kPage, MADV_DONTNEED), 0);
	ok = source->prepare_pin(*handle, range);
	EXPECT_TRUE(ok) << ok.error().message;
	/* the unmapped addresses stay watched: nothing to re-arm */
	ASSERT_EQ(munmap(p, 4 * kPage), 0);
	ok = source->prepare_pin(*handle, range);
	EXPECT_TRUE(ok) << ok.error().message;

	/* a handle that is not a watch of this source: the module's ENOENT */
	for (std::uint64_t bad : {std::uint64_t{0}, *handle + 1000}) {
		auto refused = source->prepare_pin(bad, range);
		ASSERT_FALSE(refused) << bad;
		EXPECT_EQ(refused.error().code, ENOENT);
		EXPECT_NE(refused.error().message.find("READ_BEGIN"), std::string::npos)
			<< refused.error().message;
	}
	source->unwatch(*handle);
	auto gone = source->prepare_pin(*handle, range);
	ASSERT_FALSE(gone);
	EXPECT_EQ(gone.error().code, ENOENT);
}

TEST(KmodSource, OverflowIsReportedOnce)
{
	auto source = make_source(2);
	ASSERT_NE(source, nullptr);
	char *p = map_pages(8);
	ASSERT_NE(p, nullptr);
	ASSERT_TRUE(source->watch(reinterpret_cast<std::uint64_t>(p), 8 * kPage));
	const std::uint64_t g0 = load(source->generation());
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(madvise(p + i * kPage, kPage, MADV_DONTNEED), 0);
	EXPECT_EQ(load(source->generation()), g0 + 5);
	std::vector<mrsync::Range> out;
	EXPECT_TRUE(source->drain(out)); /* lost some: resync everything */
	EXPECT_EQ(out.size(), 2u);
	out.clear();
	EXPECT_FALSE(source->drain(out));
	ASSERT_EQ(madvise(p + 7 * kPage, kPage, MADV_DONTNEED), 0);
	EXPECT_FALSE(source->drain(out));
	ASSERT_EQ(out.size(), 1u);
	EXPECT_EQ(out[0].start, reinterpret_cast<std::uint64_t>(p) + 7 * kPage);
	munmap(p, 8 * kPage);
}

TEST(KmodSource, ForkChildCanLoadTheGenerationButNotUseTheSource)
{
	auto source = make_source();
	ASSERT_NE(source, nullptr);
	char *p = map_pages(4);
	ASSERT_NE(p, nullptr);
	auto handle = source->watch(reinterpret_cast<std::uint64_t>(p), 4 * kPage);
	ASSERT_TRUE(handle) << handle.error().message;
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		int bad = 0;
		(void)load(source->generation()); /* must not fault */
		std::vector<mrsync::Range> out;
		bad |= !source->drain(out) << 0; /* "resync everything" */
		bad |= static_cast<bool>(source->watch(reinterpret_cast<std::uint64_t>(p), kPage)) << 1;
		/* the parent's watch: refused before any ioctl, like watch */
		const std::uint64_t base = reinterpret_cast<std::uint64_t>(p);
		auto pin = source->prepare_pin(*handle, {base, base + kPage});
		bad |= (pin || pin.error().code != EBADFD) << 2;
		source->unwatch(1);
		source->abandon();
		(void)load(source->generation());
		source.reset();
		_exit(bad);
	}
	int status = 0;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status)) << "child died of signal " << WTERMSIG(status);
	EXPECT_EQ(WEXITSTATUS(status), 0);
	/* the parent's source works on */
	const std::uint64_t g0 = load(source->generation());
	const std::uint64_t base = reinterpret_cast<std::uint64_t>(p);
	auto pin = source->prepare_pin(*handle, {base, base + kPage});
	EXPECT_TRUE(pin) << pin.error().message;
	ASSERT_EQ(munmap(p, 4 * kPage), 0);
	EXPECT_GT(load(source->generation()), g0);
	std::vector<mrsync::Range> out;
	EXPECT_FALSE(source->drain(out));
	EXPECT_EQ(out.size(), 1u);
}
