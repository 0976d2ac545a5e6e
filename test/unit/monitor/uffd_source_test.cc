// SPDX-License-Identifier: MIT
// The userfaultfd source against the real kernel. Every change is checked
// right after the system call returns: the kernel makes the changing thread
// wait until the monitor has read the event, so by then the generation must
// have moved and a drain must return a range covering the change.
#include <gtest/gtest.h>

#include <mrsync/mrsync.h>
#include <mrsync/source.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4 /* Linux 5.7; older libc headers lack it */
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

using mrsync::Range;
using Ranges = std::vector<Range>;
using namespace std::chrono_literals;

const std::uint64_t kPage = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
constexpr std::uint64_t kHuge = 2u << 20;

std::uint64_t addr(const void *p)
{
	return reinterpret_cast<std::uint64_t>(p);
}

// A mapping of whole pages that unmaps what is left of it at the end of the
// test. Throws (a test failure) if mmap() fails.
struct Area {
	char *base = nullptr;
	std::size_t len = 0;
	bool mapped = true; // false once a test unmapped or moved all of it

	explicit Area(std::size_t bytes, int flags = MAP_PRIVATE | MAP_ANONYMOUS, int fd = -1)
		: len(bytes)
	{
		void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, fd, 0);
		if (p == MAP_FAILED)
			throw std::system_error(errno, std::generic_category(), "mmap");
		base = static_cast<char *>(p);
		if (fd < 0)
			std::memset(base, 0x5a, len); // populate: real pages
	}
	~Area()
	{
		if (mapped)
			munmap(base, len);
	}
	Area(const Area &) = delete;
	Area &operator=(const Area &) = delete;

	char *page(std::size_t i) const { return base + i * kPage; }
	Range pages(std::size_t first, std::size_t count) const
	{
		return {addr(page(first)), addr(page(first + count))};
	}
	Range all() const { return {addr(base), addr(base) + len}; }
	// mmap(MAP_FIXED) a fresh anonymous page over page i.
	bool replace(std::size_t i) const
	{
		return mmap(page(i), kPage, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == page(i);
	}
	// munmap() all of it now.
	bool unmap()
	{
		mapped = false;
		return munmap(base, len) == 0;
	}
};

// A file of `bytes` bytes that is already unlinked; -1 on failure.
int temporary_file(std::size_t bytes)
{
	char path[] = "/tmp/mrsync-monitor-XXXXXX";
	const int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

// Whether the union of `got` covers all of `want`.
::testing::AssertionResult Covers(Ranges got, Range want)
{
	std::sort(got.begin(), got.end(),
		  [](const Range &a, const Range &b) { return a.start < b.start; });
	std::uint64_t at = want.start;
	for (const Range &range : got)
		if (range.start <= at && range.end > at)
			at = range.end;
	if (at >= want.end)
		return ::testing::AssertionSuccess();
	auto result = ::testing::AssertionFailure();
	result << "drained {";
	for (const Range &range : got)
		result << " [" << std::hex << range.start << ", " << range.end << ")";
	result << " } do not cover [" << std::hex << want.start << ", " << want.end << ")";
	return result;
}

// Waits for a child; kills it after `limit`. @return its wait status or -1.
int wait_child(pid_t pid, std::chrono::seconds limit)
{
	const auto deadline = std::chrono::steady_clock::now() + limit;
	int status = 0;
	while (std::chrono::steady_clock::now() < deadline) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return status;
		std::this_thread::sleep_for(10ms);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

// Runs `work` on its own thread and waits up to `limit` for it: a call that
// waits for a userfaultfd reader that never comes must fail the test, not
// hang it. @return false on timeout (the thread is left behind, detached).
bool ReturnsWithin(std::function<void()> work, std::chrono::milliseconds limit)
{
	struct Shared {
		std::mutex mu;
		std::condition_variable cv;
		bool done = false;
	};
	auto shared = std::make_shared<Shared>();
	std::thread worker([shared, work = std::move(work)] {
		work();
		std::lock_guard lock(shared->mu);
		shared->done = true;
		shared->cv.notify_all();
	});
	std::unique_lock lock(shared->mu);
	if (!shared->cv.wait_for(lock, limit, [&] { return shared->done; })) {
		worker.detach();
		return false;
	}
	lock.unlock();
	worker.join();
	return true;
}

// munmap() that cannot hang the test.
::testing::AssertionResult MunmapReturns(void *p, std::size_t len, std::chrono::seconds limit = 5s)
{
	// Shared, not captured by reference: after a timeout the worker
	// outlives this frame.
	auto result = std::make_shared<std::pair<int, int>>(0, 0); // rc, errno
	if (!ReturnsWithin([=] {
		    result->first = munmap(p, len);
		    result->second = errno;
	    }, limit))
		return ::testing::AssertionFailure() << "munmap() did not return within "
						      << limit.count() << " s";
	if (result->first != 0)
		return ::testing::AssertionFailure() << "munmap() failed: "
						      << std::strerror(result->second);
	return ::testing::AssertionSuccess();
}

// Runs `body` in a fork child, which exits with its result.
::testing::AssertionResult ChildSucceeds(const std::function<int()> &body)
{
	const pid_t pid = fork();
	if (pid < 0)
		return ::testing::AssertionFailure() << "fork: " << std::strerror(errno);
	if (pid == 0)
		_exit(body());
	const int status = wait_child(pid, 10s);
	if (status == -1)
		return ::testing::AssertionFailure() << "the child hung (killed after 10 s)";
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return ::testing::AssertionFailure() << "the child failed (wait status " << status << ")";
	return ::testing::AssertionSuccess();
}

std::uint64_t free_hugepages()
{
	std::ifstream meminfo("/proc/meminfo");
	std::string line;
	while (std::getline(meminfo, line))
		if (line.rfind("HugePages_Free:", 0) == 0)
			return std::stoull(line.substr(std::strlen("HugePages_Free:")));
	return 0;
}

// `count` 2 MiB hugepages, or nullptr (and `why`) if the machine has none.
std::unique_ptr<Area> hugetlb_area(std::size_t count, std::string &why)
{
	if (free_hugepages() < count) {
		why = "needs " + std::to_string(count) + " free 2 MiB hugepages (HugePages_Free in "
		      "/proc/meminfo); reserve them with: echo 64 > /proc/sys/vm/nr_hugepages";
		return nullptr;
	}
	try {
		return std::make_unique<Area>(count * kHuge, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB);
	} catch (const std::system_error &error) {
		why = std::string("MAP_HUGETLB: ") + error.what();
		return nullptr;
	}
}

class UffdSource : public ::testing::Test {
protected:
	void SetUp() override
	{
		factory_ = mrsync::find_source(MRSYNC_SOURCE_UFFD);
		ASSERT_NE(factory_, nullptr) << "the userfaultfd source is not registered";
		std::string why;
		if (!factory_->available(why))
			GTEST_SKIP() << "userfaultfd unavailable: " << why;
		source_ = make();
		ASSERT_NE(source_, nullptr);
	}

	std::unique_ptr<mrsync::EventSource> make(std::uint32_t ring_entries = 0)
	{
		auto source = factory_->create({.ring_entries = ring_entries});
		EXPECT_TRUE(source) << source.error().message;
		return source ? std::move(*source) : nullptr;
	}

	std::uint64_t generation() const
	{
		return __atomic_load_n(source_->generation(), __ATOMIC_ACQUIRE);
	}

	Ranges drain(bool *overflow = nullptr)
	{
		Ranges out;
		const bool lost = source_->drain(out);
		if (overflow)
			*overflow = lost;
		else
			EXPECT_FALSE(lost) << "unexpected overflow";
		return out;
	}

	// A fresh anonymous area of `pages` pages, watched as a whole; it lives
	// until the end of the test (and is unmapped before the source goes).
	Area &watched(std::size_t pages)
	{
		areas_.push_back(std::make_unique<Area>(pages * kPage));
		watch(areas_.back()->base, areas_.back()->len);
		return *areas_.back();
	}

	// What a change reported, checked right after its system call returned:
	// the generation has moved since `before`; the ranges drained.
	Ranges reported_since(std::uint64_t before)
	{
		EXPECT_NE(generation(), before) << "the generation did not move";
		return drain();
	}

	std::uint64_t watch(const void *p, std::uint64_t len)
	{
		auto handle = source_->watch(addr(p), len);
		EXPECT_TRUE(handle) << handle.error().message;
		return handle ? *handle : 0;
	}

	// Nothing may have happened: the generation is where it was (also a
	// little later, though events are synchronous) and the ring is empty.
	void expect_no_event(std::uint64_t before)
	{
		EXPECT_EQ(generation(), before) << "an event arrived";
		std::this_thread::sleep_for(20ms);
		EXPECT_EQ(generation(), before) << "an event arrived late";
		EXPECT_TRUE(drain().empty());
	}

	// The parent still works after a fork: unmapping a watched page
	// returns and reports.
	void expect_still_reports(const Area &area, std::size_t page)
	{
		const std::uint64_t before = generation();
		ASSERT_TRUE(MunmapReturns(area.page(page), kPage)) << "the parent's monitor stopped";
		EXPECT_TRUE(Covers(reported_since(before), area.pages(page, 1)));
	}

	const mrsync::SourceFactory *factory_ = nullptr;
	std::unique_ptr<mrsync::EventSource> source_;
	std::vector<std::unique_ptr<Area>> areas_; // destroyed before source_
};

TEST_F(UffdSource, IsRegisteredUnderItsKindAndName)
{
	EXPECT_STREQ(factory_->name, "userfaultfd");
	EXPECT_EQ(source_->name(), "userfaultfd");
	// Only the manual source takes the application's reports.
	EXPECT_EQ(dynamic_cast<mrsync::ManualInput *>(source_.get()), nullptr);
}

TEST_F(UffdSource, MunmapReportsBeforeItReturns)
{
	Area &area = watched(4);
	const std::uint64_t before = generation();
	ASSERT_TRUE(area.unmap());
	EXPECT_TRUE(Covers(reported_since(before), area.all()));
}

TEST_F(UffdSource, RepeatedMunmapsAlwaysReportBeforeReturning)
{
	// The read() that dequeues an event wakes the unmapping thread before
	// the monitor has appended the range: this fails often if the monitor
	// does not move the generation before reading.
	for (int i = 0; i < 300; ++i) {
		Area area(kPage);
		watch(area.base, area.len);
		const std::uint64_t before = generation();
		ASSERT_TRUE(area.unmap());
		const std::uint64_t after = generation();
		const Ranges drained = drain();
		ASSERT_NE(after, before) << "iteration " << i;
		ASSERT_TRUE(Covers(drained, area.all())) << "iteration " << i;
	}
}

TEST_F(UffdSource, PartialMunmapReportsExactlyThatPart)
{
	Area &area = watched(4);
	std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(1), kPage), 0);
	EXPECT_EQ(reported_since(before), (Ranges{area.pages(1, 1)}));

	before = generation(); // the rest is still watched
	ASSERT_EQ(munmap(area.page(3), kPage), 0);
	EXPECT_EQ(reported_since(before), (Ranges{area.pages(3, 1)}));
}

TEST_F(UffdSource, MapFixedOverAWatchedPageReports)
{
	Area &area = watched(4);
	const std::uint64_t before = generation();
	ASSERT_TRUE(area.replace(2));
	EXPECT_TRUE(Covers(reported_since(before), area.pages(2, 1)));
}

TEST_F(UffdSource, MadviseDontneedReports)
{
	Area &area = watched(4);
	const std::uint64_t before = generation();
	ASSERT_EQ(madvise(area.page(1), 2 * kPage, MADV_DONTNEED), 0);
	EXPECT_EQ(reported_since(before), (Ranges{area.pages(1, 2)}));
	EXPECT_EQ(area.page(1)[0], 0) << "DONTNEED gave fresh zero pages";
}

TEST_F(UffdSource, MremapMoveReportsTheOldPlace)
{
	Area &area = watched(2);
	Area target(2 * kPage); // unwatched: its place is taken by the move
	const std::uint64_t before = generation();
	ASSERT_EQ(mremap(area.base, area.len, area.len, MREMAP_MAYMOVE | MREMAP_FIXED, target.base),
		  target.base);
	area.mapped = false;
	EXPECT_TRUE(Covers(reported_since(before), area.all()));
	EXPECT_EQ(target.base[0], 0x5a) << "the pages moved";
}

TEST_F(UffdSource, MremapDontunmapReportsTheOldPlace)
{
	// The old mapping stays but its pages move away: only a REMAP event
	// says so (a plain move also unmaps the old place).
	Area &area = watched(2);
	const std::uint64_t before = generation();
	void *moved = mremap(area.base, area.len, area.len,
			     MREMAP_MAYMOVE | MREMAP_DONTUNMAP, nullptr);
	if (moved == MAP_FAILED && errno == EINVAL)
		GTEST_SKIP() << "MREMAP_DONTUNMAP unsupported";
	ASSERT_NE(moved, MAP_FAILED) << std::strerror(errno);
	EXPECT_EQ(reported_since(before), (Ranges{area.all()}));
	EXPECT_EQ(area.base[0], 0) << "the old place has fresh pages";
	EXPECT_EQ(static_cast<char *>(moved)[0], 0x5a) << "the pages moved";
	munmap(moved, area.len);
}

TEST_F(UffdSource, MprotectGivesNoEvent)
{
	Area &area = watched(4);
	const std::uint64_t before = generation();
	ASSERT_EQ(mprotect(area.base, area.len, PROT_READ), 0);
	ASSERT_EQ(mprotect(area.base, area.len, PROT_READ | PROT_WRITE), 0);
	expect_no_event(before);
}

TEST_F(UffdSource, UnwatchedRangeGivesNoEvent)
{
	watched(2);
	Area other(2 * kPage);
	const std::uint64_t before = generation();
	ASSERT_TRUE(other.unmap());
	expect_no_event(before);
}

// A named anonymous mapping takes the exact path: the source registers just
// the watched pages (a plain one is watched by the chunk around it, below).
// Kernels without CONFIG_ANON_VMA_NAME skip the tests that need it.
bool name_it(const Area &area)
{
	return prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, area.base, area.len, "mrsync-test") == 0;
}

TEST_F(UffdSource, UnwatchStopsEvents)
{
	Area area(2 * kPage);
	source_->unwatch(watch(area.base, area.len));
	const std::uint64_t before = generation();
	ASSERT_TRUE(area.unmap());
	expect_no_event(before);
}

TEST_F(UffdSource, OverlappingWatchesUnwatchOneTheOtherStillReports)
{
	Area area(6 * kPage);
	if (!name_it(area))
		GTEST_SKIP() << "PR_SET_VMA_ANON_NAME unsupported";
	const std::uint64_t a = watch(area.page(0), 4 * kPage); // pages 0-3
	const std::uint64_t b = watch(area.page(2), 4 * kPage); // pages 2-5
	source_->unwatch(a);

	std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(0), kPage), 0); // only A covered it
	expect_no_event(before);

	before = generation();
	ASSERT_EQ(munmap(area.page(3), kPage), 0); // A and B covered it
	EXPECT_TRUE(Covers(reported_since(before), area.pages(3, 1)))
		<< "unwatching A dropped B's coverage";

	source_->unwatch(b);
	before = generation();
	ASSERT_EQ(munmap(area.page(5), kPage), 0);
	expect_no_event(before);
}

// Coarse watches (uffd_chunks.cpp): the first watch of a plain anonymous
// mapping registers the chunk around it, so its unwatched neighbours report
// too (the context filters those against its registrations), until the last
// watch inside it goes.
TEST_F(UffdSource, AWatchRegistersTheChunkAroundIt)
{
	Area area(8 * kPage);
	const std::uint64_t a = watch(area.page(0), kPage);
	const std::uint64_t b = watch(area.page(2), kPage);
	std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(6), kPage), 0); // not watched, same chunk
	EXPECT_TRUE(Covers(reported_since(before), area.pages(6, 1)));
	source_->unwatch(a);
	before = generation();
	ASSERT_EQ(munmap(area.page(7), kPage), 0); // b keeps the chunk
	EXPECT_TRUE(Covers(reported_since(before), area.pages(7, 1)));
	source_->unwatch(b);
	before = generation();
	ASSERT_EQ(munmap(area.page(5), kPage), 0);
	expect_no_event(before);
}

// A kept proof is only good while the generation has not moved: a shared
// mapping put over a proven chunk (an event) must be refused, not vouched
// for on the old proof's word. The negative control is the pin guard's
// (MRSYNC_CTX_F_TEST_UNGUARDED_PINS: the core then asks no source at all).
TEST_F(UffdSource, AKeptProofDiesWithTheGeneration)
{
	Area area(8 * kPage);
	const std::uint64_t handle = watch(area.base, area.len);
	ASSERT_TRUE(source_->prepare_pin(handle, area.pages(0, 1))) << "first proof";
	ASSERT_TRUE(source_->prepare_pin(handle, area.pages(1, 1))) << "kept proof";
	const int fd = memfd_create("mrsync-test", MFD_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(ftruncate(fd, kPage), 0);
	const std::uint64_t before = generation();
	ASSERT_EQ(mmap(area.page(3), kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0),
		  area.page(3));
	close(fd);
	EXPECT_TRUE(Covers(reported_since(before), area.pages(3, 1)));
	const mrsync::Status shared = source_->prepare_pin(handle, area.pages(3, 1));
	ASSERT_FALSE(shared) << "vouched for a shared mapping on a stale proof";
	EXPECT_EQ(shared.error().code, ENOTSUP) << shared.error().message;
	EXPECT_TRUE(source_->prepare_pin(handle, area.pages(5, 1))) << "the rest is still good";
}

TEST_F(UffdSource, MapFixedLeavesTheNewMappingUnwatchedUntilRearm)
{
	Area &area = watched(2);
	ASSERT_TRUE(area.replace(0));
	drain();
	// What rearm exists for: the kernel does not watch the new mapping.
	const std::uint64_t before = generation();
	ASSERT_EQ(madvise(area.page(0), kPage, MADV_DONTNEED), 0);
	expect_no_event(before);
}

TEST_F(UffdSource, RearmAfterMapFixedWatchesTheNewMapping)
{
	Area &area = watched(2);
	ASSERT_TRUE(area.replace(0));
	drain();
	auto rearmed = source_->prepare_pin(1, {addr(area.base), addr(area.base) + area.len});
	ASSERT_TRUE(rearmed) << rearmed.error().message;

	const std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(0), kPage), 0);
	EXPECT_TRUE(Covers(reported_since(before), area.pages(0, 1)))
		<< "rearm did not register the new mapping";
}

/* Holes are skipped when arming, but a range with a hole is not vouched for:
 * a mapping that fills the hole later would be registered by nobody. */
TEST_F(UffdSource, RearmSkipsHolesButDoesNotVouchForThem)
{
	Area &area = watched(4);
	ASSERT_EQ(munmap(area.page(1), kPage), 0); // a hole
	ASSERT_TRUE(area.replace(3));
	drain();
	auto rearmed = source_->prepare_pin(1, {addr(area.base), addr(area.base) + area.len});
	ASSERT_FALSE(rearmed);
	EXPECT_EQ(rearmed.error().code, EFAULT);
	EXPECT_NE(rearmed.error().message.find("not mapped"), std::string::npos)
		<< rearmed.error().message;

	const std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(3), kPage), 0);
	EXPECT_TRUE(Covers(reported_since(before), area.pages(3, 1)));
}

TEST_F(UffdSource, RearmReportsMappingsItCannotWatchAndArmsTheRest)
{
	const int fd = temporary_file(kPage);
	ASSERT_GE(fd, 0) << std::strerror(errno);
	Area &area = watched(3);
	// Page 0: a new anonymous mapping; page 2: a file, which userfaultfd
	// cannot watch.
	ASSERT_TRUE(area.replace(0));
	ASSERT_EQ(mmap(area.page(2), kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0),
		  area.page(2));
	close(fd);
	drain();

	auto rearmed = source_->prepare_pin(1, {addr(area.base), addr(area.base) + area.len});
	ASSERT_FALSE(rearmed);
	EXPECT_EQ(rearmed.error().code, ENOTSUP);
	EXPECT_NE(rearmed.error().message.find("mrsync-monitor-"), std::string::npos)
		<< rearmed.error().message;

	const std::uint64_t before = generation();
	ASSERT_EQ(munmap(area.page(0), kPage), 0);
	EXPECT_TRUE(Covers(reported_since(before), area.pages(0, 1)))
		<< "the mapping that can be armed was not";
}

TEST_F(UffdSource, HugetlbUnmapOfOneHugePageReports)
{
	std::string why;
	auto area = hugetlb_area(2, why);
	if (!area)
		GTEST_SKIP() << why;
	watch(area->base, area->len);
	const Range first{addr(area->base), addr(area->base) + kHuge};
	const Range second{first.end, first.end + kHuge};

	std::uint64_t before = generation();
	ASSERT_EQ(munmap(area->base + kHuge, kHuge), 0);
	EXPECT_TRUE(Covers(reported_since(before), second));

	before = generation();
	ASSERT_TRUE(area->unmap());
	EXPECT_TRUE(Covers(reported_since(before), first));
}

TEST_F(UffdSource, HugetlbSmallWatchInsideAHugePage)
{
	std::string why;
	auto area = hugetlb_area(1, why);
	if (!area)
		GTEST_SKIP() << why;
	// The kernel only registers whole huge pages: a 4 KiB buffer in one
	// must still be watchable.
	watch(area->page(3), kPage);
	const std::uint64_t before = generation();
	ASSERT_TRUE(area->unmap());
	EXPECT_TRUE(Covers(reported_since(before), area->pages(3, 1)));
}

TEST_F(UffdSource, ConcurrentMunmapsAllReport)
{
	constexpr int kThreads = 4;
	Area &area = watched(2 * kThreads);
	std::vector<std::thread> threads;
	for (int t = 0; t < kThreads; ++t)
		threads.emplace_back([&area, t] { munmap(area.page(2 * t), kPage); });
	for (auto &thread : threads)
		thread.join();
	const Ranges drained = drain();
	for (int t = 0; t < kThreads; ++t)
		EXPECT_TRUE(Covers(drained, area.pages(2 * t, 1))) << "thread " << t;
}

TEST_F(UffdSource, RingSizeComesFromTheConfigAndOverflowIsReported)
{
	source_ = make(2);
	ASSERT_NE(source_, nullptr);
	Area &area = watched(8);
	for (std::size_t i = 0; i < 8; i += 2) // four ranges that do not touch
		ASSERT_EQ(munmap(area.page(i), kPage), 0);
	bool overflow = false;
	const Ranges drained = drain(&overflow);
	EXPECT_TRUE(overflow) << "4 ranges in a ring of 2";
	EXPECT_EQ(drained.size(), 2u);
	drain(&overflow);
	EXPECT_FALSE(overflow) << "reported once";
}

TEST_F(UffdSource, ForkChildUnmapsWithoutHangingAndParentSeesNothing)
{
	Area &area = watched(4);
	const std::uint64_t before = generation();
	// No monitor thread in the child: if its copy of the mapping were
	// registered, munmap() would never return.
	EXPECT_TRUE(ChildSucceeds([&] { return munmap(area.base, area.len) == 0 ? 0 : 1; }));
	expect_no_event(before);
	expect_still_reports(area, 1);
}

TEST_F(UffdSource, ForkChildAbandonsAndDestroysItsCopy)
{
	Area &area = watched(2);
	EXPECT_TRUE(ChildSucceeds([&] {
		source_->abandon();
		source_.reset(); // must neither join nor unregister
		return munmap(area.base, area.len) == 0 ? 0 : 1;
	}));
	expect_still_reports(area, 0);
}

TEST_F(UffdSource, ForkChildThatDoesNotAbandonCannotStopTheParent)
{
	Area &area = watched(2);
	// The child's copy refuses work, and destroying it must not wake the
	// parent's monitor through the inherited eventfd.
	EXPECT_TRUE(ChildSucceeds([&] {
		auto refused = source_->watch(addr(area.base), area.len);
		const bool ok = !refused && refused.error().code == ENODEV;
		source_.reset();
		return ok ? 0 : 2;
	})) << "exit status 2: the child's copy did not refuse watch() with ENODEV";
	expect_still_reports(area, 0);
}

TEST_F(UffdSource, LongLivedChildDoesNotKeepTheParentsRegistrationsAlive)
{
	// A moved mapping stays registered (UFFD_FEATURE_EVENT_REMAP) although
	// nobody watches its new place. Closing the userfaultfd unregisters it,
	// unless a fork child still holds a copy of the descriptor: then the
	// parent's munmap() of it would wait for a reader forever.
	Area &area = watched(2);
	Area target(2 * kPage);
	ASSERT_EQ(mremap(area.base, area.len, area.len, MREMAP_MAYMOVE | MREMAP_FIXED, target.base),
		  target.base);
	area.mapped = false;
	drain();

	const pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		pause(); // lives on, without exec
		_exit(0);
	}
	source_.reset();
	target.mapped = false;
	const bool returned = MunmapReturns(target.base, target.len, 3s);
	kill(pid, SIGKILL); // releases a blocked munmap() if there is one
	waitpid(pid, nullptr, 0);
	EXPECT_TRUE(returned) << "the fork child kept the parent's userfaultfd alive";
}

TEST_F(UffdSource, DestroyReturnsPromptly)
{
	Area area(2 * kPage);
	for (int round = 0; round < 3; ++round) {
		auto source = make();
		ASSERT_NE(source, nullptr);
		if (round > 0) {
			ASSERT_TRUE(source->watch(addr(area.base), area.len));
		}
		if (round > 1)
			std::this_thread::sleep_for(50ms); // the monitor is asleep in poll()
		// Destroyed on another thread, so a hang is a failure, not a hung test.
		auto *doomed = source.release();
		if (!ReturnsWithin([doomed] { delete doomed; }, 1s))
			FAIL() << "destroying the source took over a second (round " << round << ")";
	}
	// Nothing is left registered: this would hang without a reader.
	area.mapped = false;
	ASSERT_TRUE(MunmapReturns(area.base, area.len));
}

TEST_F(UffdSource, TwoSourcesCannotWatchTheSamePages)
{
	Area &area = watched(2);
	auto other = make();
	ASSERT_NE(other, nullptr);
	auto handle = other->watch(addr(area.base), area.len);
	ASSERT_FALSE(handle);
	EXPECT_EQ(handle.error().code, EBUSY) << handle.error().message;
}

TEST_F(UffdSource, BadInputIsRejectedWithDocumentedErrors)
{
	Area area(2 * kPage);
	auto expect_error = [](const auto &result, int code, const char *mentions = nullptr) {
		ASSERT_FALSE(result);
		EXPECT_EQ(result.error().code, code) << result.error().message;
		if (mentions) {
			EXPECT_NE(result.error().message.find(mentions), std::string::npos)
				<< result.error().message;
		}
	};

	expect_error(source_->watch(addr(area.base), 0), EINVAL);
	expect_error(source_->watch(UINT64_MAX - kPage + 1, 2 * kPage), EINVAL, "wraps");
	expect_error(source_->watch(UINT64_MAX - 10, 5), EINVAL, "wraps"); // once page-aligned
	expect_error(source_->prepare_pin(1, {addr(area.base), addr(area.base)}), EINVAL);

	// Unmapped, wholly and in part; the message names the range.
	Area gone(3 * kPage);
	ASSERT_EQ(munmap(gone.page(1), kPage), 0);
	char hole[32];
	std::snprintf(hole, sizeof hole, "%#llx", static_cast<unsigned long long>(addr(gone.page(1))));
	expect_error(source_->watch(addr(gone.page(1)), kPage), EFAULT, hole);
	expect_error(source_->watch(addr(gone.base), gone.len), EFAULT, hole);

	// A file mapping: userfaultfd cannot watch it; the message says which.
	const int fd = temporary_file(2 * kPage);
	ASSERT_GE(fd, 0) << std::strerror(errno);
	Area file(2 * kPage, MAP_SHARED, fd);
	close(fd);
	expect_error(source_->watch(addr(file.base), file.len), ENOTSUP, "mrsync-monitor-");

	source_->unwatch(12345); // unknown handle: ignored

	// None of it left anything behind.
	const std::uint64_t before = generation();
	ASSERT_TRUE(area.unmap());
	expect_no_event(before);
}

} // namespace
