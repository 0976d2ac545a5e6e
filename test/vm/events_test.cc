/* SPDX-License-Identifier: MIT */
/*
 * Events: every way of taking pages away from a watched range bumps the
 * generation and reports exactly the changed part of the range, before the
 * system call returns (each check runs right after the call, on the same
 * thread); unwatched ranges and protection changes report nothing.
 */
#include "vm_dev.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <sys/wait.h>

using namespace mrsync_vm;

namespace {

struct Span {
	std::uint64_t start, end;
	friend bool operator==(const Span &, const Span &) = default;
};

std::ostream &operator<<(std::ostream &os, const Span &s)
{
	return os << std::hex << "[0x" << s.start << ", 0x" << s.end << ")" << std::dec;
}

/* The union of the events of one cookie, as sorted disjoint spans. */
std::vector<Span> covered(const std::vector<mrsync_kmod_event> &events, std::uint64_t cookie)
{
	std::vector<Span> spans;
	for (const auto &e : events)
		if (e.cookie == cookie)
			spans.push_back({e.start, e.end});
	std::sort(spans.begin(), spans.end(),
		  [](const Span &a, const Span &b) { return a.start < b.start; });
	std::vector<Span> merged;
	for (const auto &s : spans) {
		if (!merged.empty() && s.start <= merged.back().end)
			merged.back().end = std::max(merged.back().end, s.end);
		else
			merged.push_back(s);
	}
	return merged;
}

class Events : public ::testing::Test {
protected:
	Dev dev;
};

} // namespace

TEST_F(Events, MunmapReportsTheWholeRange)
{
	Anon a(16 * kPage);
	a.touch();
	std::uint64_t id = 0;
	ASSERT_EQ(dev.watch(a.get(), a.len(), 11, &id), 0);
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	EXPECT_GT(dev.generation(), g0);
	auto d = dev.drain();
	EXPECT_FALSE(d.lost);
	ASSERT_FALSE(d.events.empty());
	EXPECT_EQ(covered(d.events, 11), (std::vector<Span>{{a.addr(), a.addr() + a.len()}}));
	for (const auto &e : d.events) {
		EXPECT_EQ(e.reason, static_cast<std::uint64_t>(MRSYNC_REASON_UNMAP));
		EXPECT_EQ(e.id, id);
	}
	a.release();
}

TEST_F(Events, PartialMunmapReportsOnlyThatPart)
{
	Anon a(16 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), a.len(), 12, nullptr), 0);
	ASSERT_EQ(munmap(a.get() + 5 * kPage, 2 * kPage), 0);
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 12),
		  (std::vector<Span>{{a.addr() + 5 * kPage, a.addr() + 7 * kPage}}));
}

TEST_F(Events, EventsAreClippedToTheWatchedRange)
{
	Anon a(16 * kPage);
	a.touch();
	const std::uint64_t base = a.addr();
	ASSERT_EQ(dev.watch(a.get() + 4 * kPage, 4 * kPage, 13, nullptr), 0);
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	a.release();
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 13),
		  (std::vector<Span>{{base + 4 * kPage, base + 8 * kPage}}));
}

TEST_F(Events, MapFixedOverTheRange)
{
	Anon a(8 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), a.len(), 14, nullptr), 0);
	const std::uint64_t g0 = dev.generation();
	void *p = mmap(a.get() + 2 * kPage, 3 * kPage, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ASSERT_EQ(p, a.get() + 2 * kPage);
	EXPECT_GT(dev.generation(), g0);
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 14),
		  (std::vector<Span>{{a.addr() + 2 * kPage, a.addr() + 5 * kPage}}));
}

TEST_F(Events, MadviseDontneed)
{
	Anon a(8 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), a.len(), 15, nullptr), 0);
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(madvise(a.get() + kPage, 4 * kPage, MADV_DONTNEED), 0);
	EXPECT_GT(dev.generation(), g0);
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 15),
		  (std::vector<Span>{{a.addr() + kPage, a.addr() + 5 * kPage}}));
	for (const auto &e : d.events)
		EXPECT_EQ(e.reason, static_cast<std::uint64_t>(MRSYNC_REASON_CLEAR));
}

TEST_F(Events, MremapMoveAndShrink)
{
	Anon a(8 * kPage);
	a.touch();
	Anon dst(8 * kPage);
	ASSERT_EQ(dev.watch(a.get(), a.len(), 16, nullptr), 0);

	/* shrink: the tail goes */
	void *p = mremap(a.get(), 8 * kPage, 6 * kPage, 0);
	ASSERT_EQ(p, a.get());
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 16),
		  (std::vector<Span>{{a.addr() + 6 * kPage, a.addr() + 8 * kPage}}));

	/* move: the whole old range goes */
	const std::uint64_t g0 = dev.generation();
	p = mremap(a.get(), 6 * kPage, 6 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dst.get());
	ASSERT_EQ(p, dst.get());
	EXPECT_GT(dev.generation(), g0);
	d = dev.drain();
	auto spans = covered(d.events, 16);
	ASSERT_FALSE(spans.empty());
	EXPECT_EQ(spans.front().start, a.addr());
	EXPECT_EQ(spans.back().end, a.addr() + 6 * kPage);
	a.release();
}

TEST_F(Events, UnwatchedRangesReportNothing)
{
	Anon a(8 * kPage);
	a.touch();
	/* watch the first half only */
	ASSERT_EQ(dev.watch(a.get(), 4 * kPage, 17, nullptr), 0);
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(munmap(a.get() + 4 * kPage, 4 * kPage), 0);
	ASSERT_EQ(madvise(a.get(), kPage, MADV_NORMAL), 0);
	Anon b(4 * kPage);
	b.touch();
	ASSERT_EQ(madvise(b.get(), b.len(), MADV_DONTNEED), 0);
	EXPECT_EQ(dev.generation(), g0);
	EXPECT_TRUE(dev.drain().events.empty());
	EXPECT_EQ(dev.stats().invalidations, 0u);
}

TEST_F(Events, MprotectReportsNothing)
{
	Anon a(8 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), a.len(), 18, nullptr), 0);
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(mprotect(a.get(), a.len(), PROT_READ), 0);
	ASSERT_EQ(mprotect(a.get(), a.len(), PROT_NONE), 0);
	ASSERT_EQ(mprotect(a.get(), a.len(), PROT_READ | PROT_WRITE), 0);
	a.touch();
	EXPECT_EQ(dev.generation(), g0);
	EXPECT_TRUE(dev.drain().events.empty());
	mrsync_kmod_stats st = dev.stats();
	EXPECT_GT(st.skipped, 0u) << "mprotect raised no invalidation at all?";
	EXPECT_EQ(st.recorded, 0u);
}

TEST_F(Events, UnwatchStopsReporting)
{
	Anon a(4 * kPage);
	a.touch();
	std::uint64_t id = 0;
	ASSERT_EQ(dev.watch(a.get(), a.len(), 19, &id), 0);
	ASSERT_EQ(dev.unwatch(id), 0);
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	a.release();
	EXPECT_EQ(dev.generation(), g0);
}

TEST_F(Events, OverlappingWatchesEachReport)
{
	Anon a(8 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), 6 * kPage, 21, nullptr), 0);
	ASSERT_EQ(dev.watch(a.get() + 2 * kPage, 6 * kPage, 22, nullptr), 0);
	ASSERT_EQ(munmap(a.get() + kPage, 6 * kPage), 0);
	auto d = dev.drain();
	EXPECT_EQ(covered(d.events, 21),
		  (std::vector<Span>{{a.addr() + kPage, a.addr() + 6 * kPage}}));
	EXPECT_EQ(covered(d.events, 22),
		  (std::vector<Span>{{a.addr() + 2 * kPage, a.addr() + 7 * kPage}}));
}

TEST_F(Events, WatchOnUnmappedAddressesSeesLaterMappings)
{
	Anon a(4 * kPage);
	const std::uint64_t addr = a.addr();
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	a.release();
	ASSERT_EQ(dev.watch(reinterpret_cast<void *>(addr), 4 * kPage, 23, nullptr), 0);
	void *p = mmap(reinterpret_cast<void *>(addr), 4 * kPage, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ASSERT_EQ(reinterpret_cast<std::uint64_t>(p), addr);
	static_cast<char *>(p)[0] = 1;
	dev.drain();
	const std::uint64_t g0 = dev.generation();
	ASSERT_EQ(munmap(p, 4 * kPage), 0);
	EXPECT_GT(dev.generation(), g0);
	EXPECT_EQ(covered(dev.drain().events, 23), (std::vector<Span>{{addr, addr + 4 * kPage}}));
}

/* After fork the parent's first write replaces the page (COW): reported. The
 * write-protection fork itself applies keeps the pages: not reported. */
TEST_F(Events, CopyOnWriteAfterForkIsReported)
{
	Anon a(4 * kPage);
	a.touch();
	ASSERT_EQ(dev.watch(a.get(), a.len(), 24, nullptr), 0);
	int pipefd[2];
	ASSERT_EQ(pipe(pipefd), 0);
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		char c;
		close(pipefd[1]);
		(void)!read(pipefd[0], &c, 1); /* keep the pages shared until told */
		_exit(0);
	}
	close(pipefd[0]);
	const std::uint64_t g0 = dev.generation();
	EXPECT_TRUE(dev.drain().events.empty()) << "fork's write-protection was reported";
	a.get()[kPage] = 2;
	EXPECT_GT(dev.generation(), g0);
	auto spans = covered(dev.drain().events, 24);
	ASSERT_EQ(spans.size(), 1u);
	EXPECT_LE(spans[0].start, a.addr() + kPage);
	EXPECT_GE(spans[0].end, a.addr() + 2 * kPage);
	close(pipefd[1]);
	int status;
	waitpid(pid, &status, 0);
}

/* A ring of 2: the third change finds it full, is counted as overflow and
 * still bumps the generation; consuming makes room again. */
TEST(EventsRing, OverflowIsCountedNeverLost)
{
	Dev dev(2);
	Anon a(8 * kPage);
	ASSERT_EQ(dev.watch(a.get(), a.len(), 31, nullptr), 0);
	for (int i = 0; i < 5; i++) {
		const std::uint64_t g0 = dev.generation();
		ASSERT_EQ(madvise(a.get() + i * kPage, kPage, MADV_DONTNEED), 0);
		EXPECT_EQ(dev.generation(), g0 + 1);
	}
	EXPECT_EQ(dev.hdr()->head, 2u);
	EXPECT_EQ(dev.hdr()->overflow, 3u);
	auto d = dev.drain();
	EXPECT_TRUE(d.lost);
	ASSERT_EQ(d.events.size(), 2u);
	EXPECT_EQ(d.events[0].start, a.addr());
	EXPECT_EQ(d.events[1].start, a.addr() + kPage);
	EXPECT_EQ(d.events[0].seq, 1u);
	EXPECT_EQ(d.events[1].seq, 2u);

	ASSERT_EQ(madvise(a.get() + 6 * kPage, kPage, MADV_DONTNEED), 0);
	d = dev.drain();
	EXPECT_FALSE(d.lost);
	ASSERT_EQ(d.events.size(), 1u);
	EXPECT_EQ(d.events[0].start, a.addr() + 6 * kPage);
	EXPECT_EQ(d.events[0].seq, 3u);
	mrsync_kmod_stats st = dev.stats();
	EXPECT_EQ(st.overflow, 3u);
	EXPECT_EQ(st.recorded, 3u);
	EXPECT_EQ(st.generation, 6u);
}
