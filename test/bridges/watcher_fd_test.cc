// SPDX-License-Identifier: MIT
// mrsync_watcher_fd() (mrsync/subscribe.h): a thread asleep in poll() on the
// watcher's fd is woken by a change of a subscribed range made on another
// thread through a raw system call (userfaultfd: the monitor thread signals;
// --source=kmod: the module's notifier wakes its file, in the QEMU guest;
// --source=manual: mrsync_watcher_notify_unmap() signals), within a bounded
// time, and the poll that follows delivers the range and clears the fd.
// Negative control: the same with the sources' signalling switched off
// (MRSYNC_WATCHER_F_TEST_NO_WAKEUP, a test-only bit): the sleeper times out,
// although the change is there for a poll to deliver.
#include <gtest/gtest.h>
#include <mrsync/mrsync.h>
#include <mrsync/subscribe.h>
#include <mrsync/testing.h>

#include <fcntl.h>
#include <linux/mrsync.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
const std::size_t kPage = std::size_t(sysconf(_SC_PAGESIZE));
constexpr int kWakeBoundMs = 5000;  /* a wake-up must come well within this */
constexpr int kControlWaitMs = 1000; /* how long the negative control sleeps */
std::uint32_t source = MRSYNC_SOURCE_UFFD; /* main(): --source=kmod|manual */

struct Seen {
	std::vector<mrsync_change> changes;
	static void record(void *arg, const mrsync_change *c)
	{
		static_cast<Seen *>(arg)->changes.push_back(*c);
	}
};

/* poll() on one fd for POLLIN: 1 readable, 0 timed out. */
int readable(int fd, int timeout_ms)
{
	pollfd p{fd, POLLIN, 0};
	const int n = ::poll(&p, 1, timeout_ms);
	return n > 0 && (p.revents & POLLIN) ? 1 : n;
}

class WatcherFd : public ::testing::Test {
protected:
	void SetUp() override
	{
		buf_ = static_cast<char *>(::mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE,
						  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		ASSERT_NE(buf_, MAP_FAILED);
		std::memset(buf_, 1, 8 * kPage);
		open(source);
	}
	void TearDown() override
	{
		mrsync_watcher_destroy(&w_);
		::munmap(buf_, 8 * kPage);
	}
	/* A watcher of `sources`, its fd, and the fd's first (spurious) wake-up
	 * consumed: afterwards the fd must be quiet. */
	void open(std::uint32_t sources)
	{
		mrsync_watcher_destroy(&w_);
		const int rc = mrsync_watcher_create(sources, &w_);
		if (rc == -ENODEV)
			GTEST_SKIP() << mrsync_last_error();
		ASSERT_EQ(rc, 0) << mrsync_last_error();
		ASSERT_EQ(mrsync_watcher_fd(w_, &fd_), 0) << mrsync_last_error();
		ASSERT_GE(mrsync_watcher_poll(w_), 0);
		ASSERT_EQ(readable(fd_, 0), 0) << "the fd stays readable after a poll";
	}
	void subscribe(std::size_t from, std::size_t to, Seen &seen)
	{
		ASSERT_EQ(mrsync_subscribe(w_, page(from), (to - from) * kPage, Seen::record, &seen,
					   nullptr),
			  0)
			<< mrsync_last_error();
	}
	/* The change the sources of this run can see, by a raw system call
	 * (nothing a libc hook could catch) or, manual, the report. */
	void change(std::size_t i)
	{
		if (source == MRSYNC_SOURCE_MANUAL)
			ASSERT_EQ(mrsync_watcher_notify_unmap(w_, page(i), kPage), 0);
		else
			ASSERT_EQ(::syscall(SYS_madvise, page(i), kPage, MADV_DONTNEED), 0);
	}
	/* A thread asleep in poll() on the fd, then `act` on another thread.
	 * @return how long the sleeper waited for POLLIN, or -1 (timed out). */
	template <class F>
	long sleep_then(F act, int timeout_ms)
	{
		std::atomic<bool> asleep{false};
		auto sleeper = std::async(std::launch::async, [&] {
			asleep = true;
			const int r = readable(fd_, timeout_ms);
			return std::make_pair(r, Clock::now());
		});
		while (!asleep)
			std::this_thread::yield();
		/* poll() is entered right after the flag; give it time to sleep. */
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
		const auto t0 = Clock::now();
		std::thread(act).join();
		const auto [r, t1] = sleeper.get();
		return r == 1 ? long(std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0)
					     .count())
			      : -1;
	}
	char *page(std::size_t i) const { return buf_ + i * kPage; }
	std::uint64_t at(std::size_t i) const { return reinterpret_cast<std::uint64_t>(page(i)); }

	mrsync_watcher *w_ = nullptr;
	int fd_ = -1;
	char *buf_ = nullptr;
};

TEST_F(WatcherFd, RawMunmapOnAnotherThreadWakesThePollerAndThePollDelivers)
{
	Seen seen;
	subscribe(1, 4, seen);
	const long us = sleep_then(
		[&] {
			if (source == MRSYNC_SOURCE_MANUAL)
				mrsync_watcher_notify_unmap(w_, page(2), kPage);
			else
				::syscall(SYS_munmap, page(2), kPage);
		},
		kWakeBoundMs);
	ASSERT_GE(us, 0) << "no POLLIN within " << kWakeBoundMs << " ms of the change";
	std::printf("[ wake-up  ] %s: POLLIN %ld us after the change began\n",
		    source == MRSYNC_SOURCE_KMOD ? "kmod" : source == MRSYNC_SOURCE_UFFD ? "uffd" : "manual",
		    us);
	ASSERT_EQ(mrsync_watcher_poll(w_), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, at(2));
	EXPECT_EQ(seen.changes[0].end, at(3));
	EXPECT_EQ(readable(fd_, 0), 0) << "the poll did not clear the fd";
}

TEST_F(WatcherFd, RemapThroughMapFixedWakesThePoller)
{
	if (source == MRSYNC_SOURCE_MANUAL)
		GTEST_SKIP() << "the manual source sees only reports (the test above)";
	Seen seen;
	subscribe(0, 8, seen);
	const long us = sleep_then(
		[&] {
			::syscall(SYS_mmap, page(5), kPage, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		},
		kWakeBoundMs);
	ASSERT_GE(us, 0) << "no POLLIN within " << kWakeBoundMs << " ms of mmap(MAP_FIXED)";
	ASSERT_EQ(mrsync_watcher_poll(w_), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, at(5));
}

/* Outside every subscription: the fd may wake (userfaultfd watches the whole
 * mapping, the manual source takes every report), but the poll delivers
 * nothing and leaves the fd quiet. */
TEST_F(WatcherFd, AChangeOutsideEverySubscriptionDeliversNothing)
{
	Seen seen;
	subscribe(1, 3, seen);
	change(6);
	const int woke = readable(fd_, 200);
	EXPECT_EQ(mrsync_watcher_poll(w_), 0);
	EXPECT_TRUE(seen.changes.empty());
	EXPECT_EQ(readable(fd_, 0), 0);
	std::printf("[ outside  ] woke: %s\n", woke == 1 ? "yes (spurious)" : "no");
}

/* Never missed: lock step between a mutator and an epoll loop, the fd nested
 * in the loop's own epoll set. Each change must wake the loop, whatever the
 * interleaving of the sources' signal and the poll's clear. */
TEST_F(WatcherFd, EveryChangeWakesAnEpollLoop)
{
	constexpr int kRounds = 300;
	Seen seen;
	subscribe(0, 8, seen);
	const int ep = ::epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(ep, 0);
	epoll_event ev{};
	ev.events = EPOLLIN;
	ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, fd_, &ev), 0);
	std::atomic<int> delivered{0}, spurious{0};
	std::atomic<bool> stop{false}, stuck{false};
	std::thread loop([&] {
		while (!stop) {
			epoll_event out;
			const int n = ::epoll_wait(ep, &out, 1, kWakeBoundMs);
			if (n == 0 && delivered < kRounds && !stop) {
				stuck = true; /* a change is waiting and nobody woke us */
				return;
			}
			const int calls = mrsync_watcher_poll(w_);
			if (calls > 0)
				delivered += calls;
			else if (n > 0)
				++spurious;
		}
	});
	bool ok = true;
	for (int i = 0; i < kRounds && ok; ++i) {
		change(std::size_t(i % 8));
		const auto deadline = Clock::now() + std::chrono::milliseconds(2 * kWakeBoundMs);
		while (delivered < i + 1 && Clock::now() < deadline && !stuck)
			std::this_thread::yield();
		ok = delivered >= i + 1;
	}
	stop = true;
	change(0); /* wakes the loop so that it sees `stop` */
	loop.join();
	::close(ep);
	EXPECT_TRUE(ok) << "round " << delivered.load() << " of " << kRounds << " was never delivered";
	EXPECT_FALSE(stuck);
	std::printf("[ epoll    ] %d changes, %d delivered, %d spurious wake-ups\n", kRounds,
		    delivered.load(), spurious.load());
}

/* Negative control: the sources never signal. The sleeper times out -- and
 * the change was there all along: a poll delivers it. */
TEST_F(WatcherFd, NegativeControlWithoutSignallingThePollerTimesOut)
{
	open(source | MRSYNC_WATCHER_F_TEST_NO_WAKEUP);
	Seen seen;
	subscribe(1, 4, seen);
	const long us = sleep_then([&] { change(2); }, kControlWaitMs);
	EXPECT_EQ(us, -1) << "woken although no source signals";
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, at(2));
}

TEST_F(WatcherFd, BadArgumentsAreNamed)
{
	int fd = -1;
	EXPECT_EQ(mrsync_watcher_fd(nullptr, &fd), -EINVAL);
	EXPECT_NE(std::strstr(mrsync_last_error(), "watcher"), nullptr) << mrsync_last_error();
	EXPECT_EQ(mrsync_watcher_fd(w_, nullptr), -EINVAL);
	EXPECT_NE(std::strstr(mrsync_last_error(), "fd"), nullptr) << mrsync_last_error();
	int again = -1;
	ASSERT_EQ(mrsync_watcher_fd(w_, &again), 0);
	EXPECT_EQ(again, fd_) << "one fd per watcher";
}

/* The module's side alone (<linux/mrsync.h>, ABI 1.2): poll follows the
 * generation and MRSYNC_IOC_ACK, ACK validates its argument, another mm
 * polls EPOLLERR. Only with --source=kmod (the guest). */
class ModulePoll : public ::testing::Test {
protected:
	void SetUp() override
	{
		if (source != MRSYNC_SOURCE_KMOD)
			GTEST_SKIP() << "the module's own poll: --source=kmod (QEMU guest)";
		fd_ = ::open("/dev/mrsync", O_RDWR | O_CLOEXEC);
		if (fd_ < 0)
			GTEST_SKIP() << "no /dev/mrsync";
		mrsync_kmod_version v{};
		ASSERT_EQ(::ioctl(fd_, MRSYNC_IOC_VERSION, &v), 0);
		ASSERT_TRUE(v.features & MRSYNC_FEATURE_POLL);
		map_len_ = v.ring_offset + ((MRSYNC_RING_DEFAULT * v.entry_size + kPage - 1) & ~(kPage - 1));
		void *m = ::mmap(nullptr, map_len_, PROT_READ, MAP_SHARED, fd_, 0);
		ASSERT_NE(m, MAP_FAILED);
		hdr_ = static_cast<const mrsync_kmod_header *>(m);
		buf_ = static_cast<char *>(::mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE,
						  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		ASSERT_NE(buf_, MAP_FAILED);
		mrsync_kmod_watch w{};
		w.addr = reinterpret_cast<std::uint64_t>(buf_);
		w.len = 2 * kPage; /* pages 2 and 3 are not watched */
		ASSERT_EQ(::ioctl(fd_, MRSYNC_IOC_WATCH, &w), 0);
	}
	void TearDown() override
	{
		if (buf_)
			::munmap(buf_, 4 * kPage);
		if (hdr_)
			::munmap(const_cast<mrsync_kmod_header *>(hdr_), map_len_);
		if (fd_ >= 0)
			::close(fd_);
	}
	int ack(std::uint64_t generation, std::uint64_t flags = 0)
	{
		mrsync_kmod_ack a{generation, flags};
		return ::ioctl(fd_, MRSYNC_IOC_ACK, &a) == 0 ? 0 : -errno;
	}
	std::uint64_t generation() const
	{
		return __atomic_load_n(&hdr_->generation, __ATOMIC_ACQUIRE);
	}

	int fd_ = -1;
	std::size_t map_len_ = 0;
	const mrsync_kmod_header *hdr_ = nullptr;
	char *buf_ = nullptr;
};

TEST_F(ModulePoll, ReadableFromTheChangeUntilTheAck)
{
	EXPECT_EQ(readable(fd_, 0), 0) << "nothing changed yet";
	ASSERT_EQ(::syscall(SYS_madvise, buf_ + 2 * kPage, kPage, MADV_DONTNEED), 0);
	EXPECT_EQ(readable(fd_, 0), 0) << "an unwatched change made the file readable";
	ASSERT_EQ(::syscall(SYS_madvise, buf_, kPage, MADV_DONTNEED), 0);
	EXPECT_EQ(readable(fd_, 0), 1) << "a watched change left the file quiet";
	const std::uint64_t g = generation();
	ASSERT_GE(g, 1u);
	EXPECT_EQ(ack(g, 1), -EINVAL) << "flags";
	EXPECT_EQ(ack(g + 1), -ERANGE) << "beyond the generation";
	EXPECT_EQ(readable(fd_, 0), 1) << "a refused ACK cleared the file";
	EXPECT_EQ(ack(g), 0);
	EXPECT_EQ(readable(fd_, 0), 0) << "ACK of the generation did not clear it";
	EXPECT_EQ(ack(g - 1), -ERANGE) << "below the last ACK";
	ASSERT_EQ(::syscall(SYS_munmap, buf_ + kPage, kPage), 0);
	EXPECT_EQ(readable(fd_, 0), 1) << "a change after the ACK left the file quiet";
	EXPECT_EQ(ack(generation()), 0);
}

TEST_F(ModulePoll, AnotherMmPollsErr)
{
	const pid_t child = ::fork();
	ASSERT_GE(child, 0);
	if (child == 0) {
		pollfd p{fd_, POLLIN, 0};
		const int n = ::poll(&p, 1, 0);
		::_exit(n == 1 && (p.revents & POLLERR) && !(p.revents & POLLIN) ? 0 : 1);
	}
	int status = 0;
	ASSERT_EQ(::waitpid(child, &status, 0), child);
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child did not get POLLERR";
}

} // namespace

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	for (int i = 1; i < argc; ++i) {
		if (!std::strcmp(argv[i], "--source=kmod"))
			source = MRSYNC_SOURCE_KMOD;
		else if (!std::strcmp(argv[i], "--source=manual"))
			source = MRSYNC_SOURCE_MANUAL;
	}
	return RUN_ALL_TESTS();
}
