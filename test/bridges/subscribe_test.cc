// SPDX-License-Identifier: MIT
// mrsync/subscribe.h on this machine's kernel, userfaultfd as the source
// (--source=kmod: the kernel module, in the QEMU guest, where shmdt is seen too):
// every change made by a raw system call (no libc wrapper anybody could hook)
// reaches the subscriber in the first poll after the call returned, before the
// memory is reused. The negative control is the same change under a watcher
// whose only source is the manual one: nobody reports it, nothing arrives.
#include <gtest/gtest.h>
#include <mrsync/mrsync.h>
#include <mrsync/subscribe.h>

#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::size_t kPage = std::size_t(sysconf(_SC_PAGESIZE));
std::uint32_t source = MRSYNC_SOURCE_UFFD; /* main(): --source=kmod */

struct Seen {
	std::vector<mrsync_change> changes;
	static void record(void *arg, const mrsync_change *c)
	{
		static_cast<Seen *>(arg)->changes.push_back(*c);
	}
};

class Subscribe : public ::testing::Test {
protected:
	void SetUp() override { open(source); }
	void TearDown() override
	{
		mrsync_watcher_destroy(&w_);
		if (buf_)
			::munmap(buf_, 8 * kPage);
	}
	void open(std::uint32_t sources)
	{
		mrsync_watcher_destroy(&w_);
		int rc = mrsync_watcher_create(sources, &w_);
		if (rc == -ENODEV)
			GTEST_SKIP() << mrsync_last_error();
		ASSERT_EQ(rc, 0) << mrsync_last_error();
		if (!buf_)
			buf_ = static_cast<char *>(::mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE,
							  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		ASSERT_NE(buf_, MAP_FAILED);
		std::memset(buf_, 1, 8 * kPage);
	}
	/* Subscribes to pages [from, to) of buf_. */
	std::uint64_t subscribe(std::size_t from, std::size_t to, Seen &seen)
	{
		std::uint64_t id = 0;
		EXPECT_EQ(mrsync_subscribe(w_, page(from), (to - from) * kPage, Seen::record, &seen,
					   &id), 0)
			<< mrsync_last_error();
		return id;
	}
	char *page(std::size_t i) const { return buf_ + i * kPage; }
	std::uint64_t at(std::size_t i) const { return reinterpret_cast<std::uint64_t>(page(i)); }
	void map_fresh(std::size_t i)
	{
		ASSERT_EQ(::mmap(page(i), kPage, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			  page(i));
	}

	mrsync_watcher *w_ = nullptr;
	char *buf_ = nullptr;
};

TEST_F(Subscribe, RawMunmapOnAnotherThreadReachesTheNextPoll)
{
	Seen seen;
	const std::uint64_t id = subscribe(1, 4, seen);
	std::thread([&] { ASSERT_EQ(::syscall(SYS_munmap, page(2), kPage), 0); }).join();
	ASSERT_EQ(mrsync_watcher_poll(w_), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, at(2));
	EXPECT_EQ(seen.changes[0].end, at(3));
	EXPECT_EQ(seen.changes[0].subscription, id);
	EXPECT_EQ(seen.changes[0].flags, 0u);
	EXPECT_EQ(mrsync_watcher_poll(w_), 0) << "a change is delivered once";
}

TEST_F(Subscribe, RawMremapMadviseAndMapFixedEachReachTheSubscriber)
{
	Seen seen;
	subscribe(0, 8, seen);
	char *away = static_cast<char *>(::mmap(nullptr, kPage, PROT_NONE,
						MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	ASSERT_NE(away, MAP_FAILED);
	ASSERT_EQ(reinterpret_cast<char *>(::syscall(SYS_mremap, page(1), kPage, kPage,
						     MREMAP_MAYMOVE | MREMAP_FIXED, away)),
		  away);
	ASSERT_EQ(::syscall(SYS_madvise, page(3), kPage, MADV_DONTNEED), 0);
	map_fresh(5);
	ASSERT_GE(mrsync_watcher_poll(w_), 1);
	std::vector<bool> hit(8);
	for (const auto &c : seen.changes)
		for (std::uint64_t a = c.start; a < c.end; a += kPage)
			hit[(a - at(0)) / kPage] = true;
	EXPECT_TRUE(hit[1]) << "mremap away";
	EXPECT_TRUE(hit[3]) << "MADV_DONTNEED";
	EXPECT_TRUE(hit[5]) << "mmap(MAP_FIXED)";
	EXPECT_FALSE(hit[0] || hit[7]) << "untouched pages reported";
	::munmap(away, kPage);
}

TEST_F(Subscribe, MemoryMappedAgainIsWatchedAgain)
{
	Seen seen;
	subscribe(2, 3, seen);
	ASSERT_EQ(::syscall(SYS_munmap, page(2), kPage), 0);
	ASSERT_EQ(mrsync_watcher_poll(w_), 1);
	map_fresh(2); /* a hole when the poll ran: watched from the next poll */
	EXPECT_EQ(mrsync_watcher_poll(w_), 0);
	map_fresh(2); /* replaces the new mapping: must be seen too */
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
	EXPECT_EQ(seen.changes.size(), 2u);
}

TEST_F(Subscribe, ChangesOutsideTheRangeAreNotDelivered)
{
	Seen seen;
	subscribe(4, 6, seen);
	ASSERT_EQ(::syscall(SYS_munmap, page(1), kPage), 0);
	ASSERT_EQ(::syscall(SYS_madvise, page(7), kPage, MADV_DONTNEED), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 0);
	EXPECT_TRUE(seen.changes.empty());
}

TEST_F(Subscribe, UnsubscribedGetsNothingAndWatchesDoNotPin)
{
	Seen seen;
	const std::uint64_t id = subscribe(0, 2, seen);
	EXPECT_EQ(mrsync_unsubscribe(w_, id), 0);
	EXPECT_EQ(mrsync_unsubscribe(w_, id), -ENOENT);
	EXPECT_NE(std::string(mrsync_last_error()).find("id"), std::string::npos);
	ASSERT_EQ(::syscall(SYS_munmap, page(0), kPage), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 0);
	EXPECT_TRUE(seen.changes.empty());
}

/* A callback may unsubscribe itself and subscribe anew; it may not poll. */
struct Reentrant {
	mrsync_watcher *w;
	void *next_addr;
	int poll_rc = 0, unsub_rc = -1, sub_rc = -1;
	Seen later;
	static void call(void *arg, const mrsync_change *c)
	{
		auto *self = static_cast<Reentrant *>(arg);
		self->poll_rc = mrsync_watcher_poll(self->w);
		self->unsub_rc = mrsync_unsubscribe(self->w, c->subscription);
		self->sub_rc = mrsync_subscribe(self->w, self->next_addr, kPage, Seen::record,
						&self->later, nullptr);
	}
};

TEST_F(Subscribe, CallbacksMayResubscribeButNotPoll)
{
	Reentrant r{w_, page(6)};
	ASSERT_EQ(mrsync_subscribe(w_, page(0), 2 * kPage, Reentrant::call, &r, nullptr), 0);
	ASSERT_EQ(::syscall(SYS_munmap, page(0), 2 * kPage), 0); /* one merged change */
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
	EXPECT_EQ(r.poll_rc, -EDEADLK);
	EXPECT_EQ(r.unsub_rc, 0);
	EXPECT_EQ(r.sub_rc, 0) << mrsync_last_error();
	ASSERT_EQ(::syscall(SYS_munmap, page(6), kPage), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
	EXPECT_EQ(r.later.changes.size(), 1u);
}

TEST_F(Subscribe, BadArgumentsAreNamed)
{
	Seen seen;
	auto says = [](const char *what) {
		return std::string(mrsync_last_error()).find(what) != std::string::npos;
	};
	EXPECT_EQ(mrsync_watcher_create(0, nullptr), -EINVAL);
	EXPECT_TRUE(says("out"));
	mrsync_watcher *none = nullptr;
	EXPECT_EQ(mrsync_watcher_create(1u << 20, &none), -EINVAL);
	EXPECT_TRUE(says("sources"));
	EXPECT_EQ(mrsync_subscribe(nullptr, buf_, kPage, Seen::record, &seen, nullptr), -EINVAL);
	EXPECT_TRUE(says("watcher"));
	EXPECT_EQ(mrsync_subscribe(w_, buf_, kPage, nullptr, &seen, nullptr), -EINVAL);
	EXPECT_TRUE(says("fn"));
	EXPECT_EQ(mrsync_subscribe(w_, buf_, 0, Seen::record, &seen, nullptr), -EINVAL);
	EXPECT_TRUE(says("len"));
	EXPECT_EQ(mrsync_subscribe(w_, reinterpret_cast<void *>(~0ull - 10), 100, Seen::record,
				   &seen, nullptr),
		  -EINVAL);
	EXPECT_TRUE(says("wraps"));
	EXPECT_EQ(mrsync_watcher_poll(nullptr), -EINVAL);
	EXPECT_EQ(mrsync_watcher_notify_unmap(w_, buf_, kPage), -ENOTSUP);
	EXPECT_TRUE(says("manual"));
	/* userfaultfd cannot see every change of a shared mapping (nor of SysV
	 * shm, whose shmdt it does not report): refused, not half-watched. */
	if (source == MRSYNC_SOURCE_UFFD) {
		void *shared = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE,
				      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(shared, MAP_FAILED);
		EXPECT_EQ(mrsync_subscribe(w_, shared, kPage, Seen::record, &seen, nullptr),
			  -ENOTSUP);
		EXPECT_TRUE(says("addr, len")) << mrsync_last_error();
		::munmap(shared, kPage);
	}
	/* userfaultfd watches mappings, so a hole is refused; the module
	 * watches the address range whatever is mapped there. */
	ASSERT_EQ(::munmap(page(0), kPage), 0);
	EXPECT_EQ(mrsync_subscribe(w_, page(0), kPage, Seen::record, &seen, nullptr),
		  source == MRSYNC_SOURCE_UFFD ? -EFAULT : 0);
}

/* shmdt: no userfaultfd event exists for it; the module's notifier sees it. */
TEST_F(Subscribe, ShmdtReachesTheSubscriberWithTheModule)
{
	if (source != MRSYNC_SOURCE_KMOD)
		GTEST_SKIP() << "userfaultfd reports nothing for shmdt (docs/design.md)";
	const int id = ::shmget(IPC_PRIVATE, 2 * kPage, IPC_CREAT | 0600);
	ASSERT_GE(id, 0);
	char *seg = static_cast<char *>(::shmat(id, nullptr, 0));
	::shmctl(id, IPC_RMID, nullptr);
	ASSERT_NE(seg, reinterpret_cast<char *>(-1));
	seg[0] = 1;
	Seen seen;
	ASSERT_EQ(mrsync_subscribe(w_, seg, 2 * kPage, Seen::record, &seen, nullptr), 0)
		<< mrsync_last_error();
	ASSERT_EQ(::shmdt(seg), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, reinterpret_cast<std::uint64_t>(seg));
}

/* libmrsync.so, which users link, refuses the fd tests' test-only bit
 * (MRSYNC_WATCHER_F_TEST_NO_WAKEUP, bit 31: mrsync/testing.h is not installed). */
TEST_F(Subscribe, TheTestOnlyWakeupBitIsRefused)
{
	mrsync_watcher *w = nullptr;
	EXPECT_EQ(mrsync_watcher_create(MRSYNC_SOURCE_MANUAL | (1u << 31), &w), -EINVAL);
	EXPECT_NE(std::strstr(mrsync_last_error(), "test-only"), nullptr) << mrsync_last_error();
	EXPECT_EQ(w, nullptr);
}

/* Negative control: the same raw munmap with only the manual source, which
 * sees nothing the application does not report. The subscriber is not told:
 * what the tests above check is the userfaultfd source's work. */
TEST_F(Subscribe, NegativeControlWithoutAWatchingSourceTheChangeIsMissed)
{
	open(MRSYNC_SOURCE_MANUAL);
	Seen seen;
	subscribe(1, 4, seen);
	ASSERT_EQ(::syscall(SYS_munmap, page(2), kPage), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 0);
	EXPECT_TRUE(seen.changes.empty()) << "the manual source reported a change nobody told it";
	/* ...and the manual source does deliver what it is told. */
	ASSERT_EQ(mrsync_watcher_notify_unmap(w_, page(2), kPage), 0);
	EXPECT_EQ(mrsync_watcher_poll(w_), 1);
}

} // namespace

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	for (int i = 1; i < argc; ++i)
		if (!std::strcmp(argv[i], "--source=kmod"))
			source = MRSYNC_SOURCE_KMOD;
	return RUN_ALL_TESTS();
}
