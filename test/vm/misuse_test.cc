/* SPDX-License-Identifier: MIT */
/*
 * Misuse: a file used from another address space (fork child, SCM_RIGHTS,
 * exec) gets -EBADFD and never sees the other process's events; threads race
 * watch/unwatch against munmap while a reader drains; processes die with
 * watches active. The harness then checks that rmmod succeeds and dmesg is
 * quiet.
 */
#include "vm_dev.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>

using namespace mrsync_vm;

namespace {

/* In a child: fail with the line number as exit code. */
#define CHILD_CHECK(cond)                                                                  \
	do {                                                                               \
		if (!(cond)) {                                                             \
			std::fprintf(stderr, "child check failed at line %d: %s (errno %d)\n", \
				     __LINE__, #cond, errno);                              \
			_exit(__LINE__ % 250 + 1);                                         \
		}                                                                          \
	} while (0)

int wait_exit(pid_t pid)
{
	int status = 0;
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Every command of a file bound to another mm fails with EBADFD, unknown
 * commands still with ENOTTY, and mmap too with EBADFD. */
bool foreign_file_is_refused(int fd)
{
	std::uint64_t buf[16] = {};
	mrsync_kmod_watch w{};
	Anon a(kPage);
	w.addr = a.addr();
	w.len = kPage;
	mrsync_kmod_ring_config rc{16, 0};
	mrsync_kmod_unwatch u{1, 0};
	mrsync_kmod_consume c{0, 0};
	mrsync_kmod_read_begin rb{1, 0, 0, 0};
	bool ok = xioctl(fd, MRSYNC_IOC_VERSION, buf) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_STATS, buf) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_WATCH, &w) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_UNWATCH, &u) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_CONSUME, &c) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_SET_RING, &rc) == -EBADFD &&
		  xioctl(fd, MRSYNC_IOC_READ_BEGIN, &rb) == -EBADFD &&
		  xioctl(fd, _IO(MRSYNC_IOC_MAGIC, 0x40), buf) == -ENOTTY;
	void *p = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd, 0);
	ok = ok && p == MAP_FAILED && errno == EBADFD;
	return ok;
}

bool is_mapped(const void *addr)
{
	unsigned char vec;
	void *page = reinterpret_cast<void *>(reinterpret_cast<std::uintptr_t>(addr) & ~(kPage - 1));
	return mincore(page, kPage, &vec) == 0;
}

/* One byte carrying one descriptor (SCM_RIGHTS). */
struct FdMessage {
	char data = 'F';
	iovec iov{&data, 1};
	alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
	msghdr msg{};

	FdMessage()
	{
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl;
		msg.msg_controllen = sizeof(ctl);
	}
	FdMessage(const FdMessage &) = delete;
};

int send_fd(int sock, int fd)
{
	FdMessage m;
	cmsghdr *cm = CMSG_FIRSTHDR(&m.msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	std::memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(sock, &m.msg, 0) == 1 ? 0 : -errno;
}

int recv_fd(int sock)
{
	FdMessage m;
	if (recvmsg(sock, &m.msg, 0) != 1)
		return -1;
	cmsghdr *cm = CMSG_FIRSTHDR(&m.msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	std::memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

void sync_read(int fd)
{
	char c;
	(void)!read(fd, &c, 1);
}

void sync_write(int fd)
{
	(void)!write(fd, "x", 1);
}

} // namespace

/* Helper mode for ExecGetsEBADFD: the fd survived exec into a new mm. */
int mrsync_vm_helper(int argc, char **argv)
{
	if (argc < 2 || std::strncmp(argv[1], "--exec-check=", 13) != 0)
		return -1;
	int fd = std::atoi(argv[1] + 13);
	return foreign_file_is_refused(fd) ? 0 : 1;
}

TEST(Misuse, ForkChildGetsEBADFDAndNoEvents)
{
	Dev dev;
	Anon a(8 * kPage);
	a.touch();
	std::uint64_t id = 0;
	ASSERT_EQ(dev.watch(a.get(), a.len(), 41, &id), 0);
	const std::uint64_t g0 = dev.generation();

	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		CHILD_CHECK(foreign_file_is_refused(dev.fd()));
		/* the parent's live watch too: the child cannot wait on it */
		CHILD_CHECK(dev.read_begin(id) == -EBADFD);
		/* the ring is not inherited: nothing to read the parent's events from */
		CHILD_CHECK(!is_mapped(dev.hdr()));
		/* changing the child's copy of the range is not the parent's event */
		CHILD_CHECK(munmap(a.get(), a.len()) == 0);
		/* a file of its own works */
		int own = open_dev();
		CHILD_CHECK(own >= 0);
		mrsync_kmod_version v{};
		CHILD_CHECK(xioctl(own, MRSYNC_IOC_VERSION, &v) == 0);
		close(own);
		close(dev.fd());
		_exit(0);
	}
	EXPECT_EQ(wait_exit(pid), 0);
	EXPECT_EQ(dev.generation(), g0) << "the child's munmap reached the parent's ring";
	/* the child's exit and close left the parent's file intact */
	mrsync_kmod_stats st = dev.stats();
	EXPECT_EQ(st.watches, 1u);
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	a.release();
	EXPECT_GT(dev.generation(), g0);
}

TEST(Misuse, FdOverScmRightsGetsEBADFD)
{
	int sv[2];
	ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int go[2];
	ASSERT_EQ(pipe(go), 0);
	Dev mine;
	Anon a(4 * kPage);
	ASSERT_EQ(mine.watch(a.get(), a.len(), 42, nullptr), 0);
	const std::uint64_t g0 = mine.generation();

	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		close(sv[0]);
		close(go[1]);
		/* receive the parent's file: refused here */
		int theirs = recv_fd(sv[1]);
		CHILD_CHECK(theirs >= 0);
		CHILD_CHECK(foreign_file_is_refused(theirs));
		close(theirs);
		/* send a file of our own, with watches, then die with it in flight */
		Dev own;
		Anon b(4 * kPage);
		b.touch();
		for (int i = 0; i < 100; i++)
			CHILD_CHECK(own.watch(b.get(), b.len(), 100 + i, nullptr) == 0);
		CHILD_CHECK(send_fd(sv[1], own.fd()) == 0);
		sync_read(go[0]);
		_exit(0);
	}
	close(sv[1]);
	close(go[0]);
	ASSERT_EQ(send_fd(sv[0], mine.fd()), 0);
	int theirs = recv_fd(sv[0]);
	ASSERT_GE(theirs, 0);
	EXPECT_TRUE(foreign_file_is_refused(theirs));
	sync_write(go[1]);
	EXPECT_EQ(wait_exit(pid), 0);
	/* the child's mm is gone; its file (with 100 watches) dies here */
	EXPECT_TRUE(foreign_file_is_refused(theirs));
	close(theirs);
	EXPECT_EQ(mine.generation(), g0);
	EXPECT_EQ(mine.stats().watches, 1u);
	close(sv[0]);
	close(go[1]);
}

TEST(Misuse, ExecGetsEBADFD)
{
	int fd = open("/dev/mrsync", O_RDWR); /* no O_CLOEXEC: survives exec */
	ASSERT_GE(fd, 0);
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		std::string arg = "--exec-check=" + std::to_string(fd);
		execl("/proc/self/exe", "mrsync_vm_misuse", arg.c_str(), static_cast<char *>(nullptr));
		_exit(127);
	}
	EXPECT_EQ(wait_exit(pid), 0);
	close(fd);
}

TEST(Misuse, OtherThreadsOfTheProcessMayUseTheFile)
{
	Dev dev;
	Anon a(2 * kPage);
	std::uint64_t id = 0;
	int ret = -1;
	std::thread t([&] { ret = dev.watch(a.get(), a.len(), 43, &id); });
	t.join();
	ASSERT_EQ(ret, 0);
	ASSERT_EQ(munmap(a.get(), a.len()), 0);
	a.release();
	auto d = dev.drain();
	ASSERT_EQ(d.events.size(), 1u);
	EXPECT_EQ(d.events[0].id, id);
}

TEST(Misuse, CloseWhileRingMappedKeepsTheRingReadable)
{
	auto dev = std::make_unique<Dev>();
	Anon a(kPage);
	ASSERT_EQ(dev->watch(a.get(), kPage, 44, nullptr), 0);
	const mrsync_kmod_header *hdr = dev->hdr();
	std::size_t len = hdr->map_size;
	int dup_map_fd = dev->fd();
	void *p = mmap(nullptr, len, PROT_READ, MAP_SHARED, dup_map_fd, 0);
	ASSERT_NE(p, MAP_FAILED);
	dev.reset(); /* closes the fd and unmaps its own mapping; ours keeps the file */
	auto *h = static_cast<const mrsync_kmod_header *>(p);
	EXPECT_EQ(h->magic, MRSYNC_MAGIC);
	/* the watch lives as long as the file: still reported */
	ASSERT_EQ(munmap(a.get(), kPage), 0);
	a.release();
	EXPECT_EQ(__atomic_load_n(&h->generation, __ATOMIC_ACQUIRE), 1u);
	munmap(p, len); /* last reference: release */
}

/*
 * Threads race watch/unwatch against munmap/mmap(MAP_FIXED)/madvise over one
 * region while a reader drains and consumes and another thread waits in
 * READ_BEGIN on watches being removed. Every event must be a whole,
 * page-aligned range inside the range its cookie names; nothing is torn.
 */
TEST(Misuse, ThreadsRaceWatchUnwatchAgainstMunmap)
{
	constexpr std::size_t kSlots = 64;
	Dev dev(64);
	Anon region(kSlots * kPage);
	region.touch();
	const std::uint64_t base = region.addr();
	std::atomic<bool> stop{false};
	std::atomic<unsigned long> watches{0}, remaps{0}, bad{0}, events{0}, lost{0};

	auto watcher = [&](unsigned seed) {
		std::mt19937 rng(seed);
		std::vector<std::uint64_t> ids;
		while (!stop.load(std::memory_order_relaxed)) {
			if (ids.size() < 32 && rng() % 3 != 0) {
				std::uint64_t first = rng() % kSlots;
				std::uint64_t n = 1 + rng() % (kSlots - first);
				/* the cookie names the watched range: first slot, count */
				std::uint64_t id = 0;
				if (dev.watch(region.get() + first * kPage, n * kPage,
					      (first << 32) | n, &id) == 0) {
					ids.push_back(id);
					watches++;
				} else {
					bad++;
				}
			} else if (!ids.empty()) {
				std::size_t k = rng() % ids.size();
				if (dev.unwatch(ids[k]) != 0)
					bad++;
				ids[k] = ids.back();
				ids.pop_back();
			}
			std::this_thread::yield(); /* leave the vCPUs to the mappers too */
		}
		for (auto id : ids)
			if (dev.unwatch(id) != 0)
				bad++;
	};
	auto mapper = [&](unsigned seed) {
		std::mt19937 rng(seed);
		while (!stop.load(std::memory_order_relaxed)) {
			std::uint64_t first = rng() % kSlots;
			std::uint64_t n = 1 + rng() % std::min<std::uint64_t>(8, kSlots - first);
			char *p = region.get() + first * kPage;
			switch (rng() % 3) {
			case 0:
				if (mmap(p, n * kPage, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
					bad++;
				break;
			case 1:
				madvise(p, n * kPage, MADV_DONTNEED);
				break;
			default: /* a protection change that keeps the range writable for the
				  * other mapper: reported as nothing */
				mprotect(p, n * kPage, PROT_READ | PROT_WRITE | PROT_EXEC);
				mprotect(p, n * kPage, PROT_READ | PROT_WRITE);
				break;
			}
			p[0] = 1;
			remaps++;
		}
	};
	/* READ_BEGIN on ids the watchers create and remove concurrently: 0 or
	 * ENOENT, never anything else, and the node never freed under it */
	std::atomic<unsigned long> begins{0};
	auto beginner = [&](unsigned seed) {
		std::mt19937 rng(seed);
		while (!stop.load(std::memory_order_relaxed)) {
			const std::uint64_t id = 1 + rng() % (watches.load() + 1);
			const int r = dev.read_begin(id);
			if (r != 0 && r != -ENOENT)
				bad++;
			begins += r == 0;
			std::this_thread::yield();
		}
	};
	auto reader = [&] {
		while (!stop.load(std::memory_order_relaxed)) {
			auto d = dev.drain();
			if (d.lost)
				lost++;
			for (const auto &e : d.events) {
				std::uint64_t first = e.cookie >> 32, n = e.cookie & 0xffffffff;
				std::uint64_t ws = base + first * kPage, we = ws + n * kPage;
				if (e.start >= e.end || e.start < ws || e.end > we ||
				    e.start % kPage || e.end % kPage)
					bad++;
				events++;
			}
		}
	};

	std::vector<std::thread> threads;
	threads.emplace_back(watcher, 1);
	threads.emplace_back(watcher, 2);
	threads.emplace_back(mapper, 3);
	threads.emplace_back(mapper, 4);
	threads.emplace_back(reader);
	threads.emplace_back(beginner, 5);
	/* at least 4 s and 200 remaps (TLB shootdowns are slow under TCG on a
	 * busy host), at most 20 s */
	const auto t0 = std::chrono::steady_clock::now();
	for (;;) {
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
		const auto elapsed = std::chrono::steady_clock::now() - t0;
		if ((elapsed >= std::chrono::seconds(4) && remaps.load() >= 200) ||
		    elapsed >= std::chrono::seconds(20))
			break;
	}
	stop = true;
	for (auto &t : threads)
		t.join();

	std::printf("race: %lu watches, %lu remaps, %lu events, %lu overflowed drains, "
		    "%lu read_begins on live watches\n",
		    watches.load(), remaps.load(), events.load(), lost.load(), begins.load());
	EXPECT_EQ(bad.load(), 0u);
	EXPECT_GT(watches.load(), 100u);
	EXPECT_GT(remaps.load(), 50u);
	EXPECT_GT(events.load(), 0u);
	EXPECT_GT(begins.load(), 0u);
	mrsync_kmod_stats st = dev.stats();
	EXPECT_EQ(st.watches, 0u);
	EXPECT_EQ(st.recorded + st.overflow, st.generation);
}

/* Processes killed with watches active, some in the middle of watching and
 * unmapping: exit tears everything down (checked by rmmod afterwards). */
TEST(Misuse, KilledWithWatchesActive)
{
	for (int round = 0; round < 6; round++) {
		int ready[2];
		ASSERT_EQ(pipe(ready), 0);
		pid_t pid = fork();
		ASSERT_GE(pid, 0);
		if (pid == 0) {
			close(ready[0]);
			Dev dev(round % 2 ? 4 : 0);
			Anon a(64 * kPage);
			a.touch();
			for (int i = 0; i < 2000; i++) {
				dev.watch(a.get() + (i % 64) * kPage, kPage, i, nullptr);
				if (i == 1000)
					sync_write(ready[1]);
			}
			std::thread churn([&] {
				for (unsigned i = 0;; i++)
					madvise(a.get() + (i % 64) * kPage, kPage, MADV_DONTNEED);
			});
			for (unsigned i = 0;; i++) {
				std::uint64_t id = 0;
				if (dev.watch(a.get() + (i % 64) * kPage, kPage, i, &id) == 0) {
					dev.read_begin(id); /* may be waiting when killed */
					dev.unwatch(id);
				}
			}
		}
		close(ready[1]);
		sync_read(ready[0]);
		/* kill at a different point each round */
		std::this_thread::sleep_for(std::chrono::milliseconds(20 * round));
		kill(pid, SIGKILL);
		EXPECT_EQ(wait_exit(pid), 1000 + SIGKILL);
		close(ready[0]);
	}
}
