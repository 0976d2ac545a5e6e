/* SPDX-License-Identifier: MIT */
/*
 * The ioctl and mmap ABI of /dev/mrsync: every command with every kind of bad
 * field gets the errno the uapi header documents; random commands and
 * arguments (bounded in count and time) leave the kernel quiet (the harness
 * fails the run on any WARN/BUG/oops in dmesg).
 */
#include "vm_dev.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

using namespace mrsync_vm;

namespace {

class Fd {
public:
	Fd() : fd_(open_dev()) {}
	~Fd()
	{
		if (fd_ >= 0)
			close(fd_);
	}
	int get() const { return fd_; }

private:
	int fd_;
};

int watch_raw(int fd, mrsync_kmod_watch w)
{
	return xioctl(fd, MRSYNC_IOC_WATCH, &w);
}

mrsync_kmod_watch watch_arg(std::uint64_t addr, std::uint64_t len)
{
	mrsync_kmod_watch w{};
	w.addr = addr;
	w.len = len;
	return w;
}

std::string read_param(const char *name)
{
	std::ifstream in(std::string("/sys/module/mrsync/parameters/") + name);
	std::string v;
	in >> v;
	return v;
}

bool write_param(const char *name, const std::string &v)
{
	std::ofstream out(std::string("/sys/module/mrsync/parameters/") + name);
	out << v;
	return static_cast<bool>(out.flush());
}

} // namespace

TEST(Abi, VersionHandshake)
{
	Fd fd;
	ASSERT_GE(fd.get(), 0);
	mrsync_kmod_version v{};
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_VERSION, &v), 0);
	EXPECT_EQ(v.abi_version, static_cast<std::uint64_t>(MRSYNC_ABI_VERSION));
	EXPECT_EQ(v.abi_version, (1u << 16) | 2u) << "ABI 1.2: READ_BEGIN, poll + ACK";
	EXPECT_TRUE(v.features & MRSYNC_FEATURE_CONSUME);
	EXPECT_TRUE(v.features & MRSYNC_FEATURE_READ_BEGIN);
	EXPECT_TRUE(v.features & MRSYNC_FEATURE_POLL);
	EXPECT_EQ(v.features & ~(MRSYNC_FEATURE_CONSUME | MRSYNC_FEATURE_READ_BEGIN |
				 MRSYNC_FEATURE_POLL),
		  0u);
	EXPECT_EQ(v.entry_size, sizeof(mrsync_kmod_event));
	EXPECT_EQ(v.ring_offset, kPage);
	EXPECT_EQ(v.ring_min, static_cast<std::uint64_t>(MRSYNC_RING_MIN));
	EXPECT_EQ(v.ring_max, static_cast<std::uint64_t>(MRSYNC_RING_MAX));
	EXPECT_GE(v.max_watches, 10001u);
}

TEST(Abi, UnknownCommandsAreENOTTY)
{
	Fd fd;
	std::uint64_t buf[16] = {};
	EXPECT_EQ(xioctl(fd.get(), _IO(MRSYNC_IOC_MAGIC, 0x40), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), _IOWR(MRSYNC_IOC_MAGIC, 0x07, mrsync_kmod_stats), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), _IOWR(MRSYNC_IOC_MAGIC, 0x06, mrsync_kmod_stats), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), _IOW(MRSYNC_IOC_MAGIC, 0x06, mrsync_kmod_read_begin), buf),
		  -ENOTTY);
	/* a known ordinal with the wrong size or direction is another command */
	EXPECT_EQ(xioctl(fd.get(), _IOR(MRSYNC_IOC_MAGIC, 0x02, std::uint64_t), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), _IOW(MRSYNC_IOC_MAGIC, 0x00, mrsync_kmod_version), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), _IOR('x', 0x00, mrsync_kmod_version), buf), -ENOTTY);
	EXPECT_EQ(xioctl(fd.get(), TCGETS, buf), -ENOTTY);
}

TEST(Abi, BadPointersAreEFAULT)
{
	Fd fd;
	void *bad = reinterpret_cast<void *>(8);
	for (unsigned long cmd : {MRSYNC_IOC_VERSION, MRSYNC_IOC_SET_RING, MRSYNC_IOC_WATCH,
				  MRSYNC_IOC_UNWATCH, MRSYNC_IOC_CONSUME, MRSYNC_IOC_STATS,
				  MRSYNC_IOC_READ_BEGIN})
		EXPECT_EQ(xioctl(fd.get(), cmd, bad), -EFAULT) << std::hex << cmd;
}

TEST(Abi, ReadBegin)
{
	Dev dev(0, false);
	Anon a(4 * kPage);
	std::uint64_t id = 0;
	ASSERT_EQ(dev.watch(a.get(), a.len(), 5, &id), 0);
	auto read_begin = [&](mrsync_kmod_read_begin rb) {
		return xioctl(dev.fd(), MRSYNC_IOC_READ_BEGIN, &rb);
	};

	/* a fresh watch: nothing is being invalidated, returns at once */
	mrsync_kmod_read_begin rb{};
	rb.id = id;
	rb.seq = 0x5eb0;
	ASSERT_EQ(xioctl(dev.fd(), MRSYNC_IOC_READ_BEGIN, &rb), 0);
	EXPECT_EQ(rb.id, id);
	EXPECT_EQ(rb.flags, 0u);
	EXPECT_EQ(rb.reserved, 0u);
	EXPECT_EQ(dev.read_begin(id), 0);
	/* after changes of the range too (they are over when munmap returns) */
	a.touch();
	ASSERT_EQ(madvise(a.get(), a.len(), MADV_DONTNEED), 0);
	EXPECT_EQ(dev.read_begin(id), 0);

	/* flags and reserved first, before the id is looked at */
	rb = {id, 1, 0, 0};
	EXPECT_EQ(read_begin(rb), -EINVAL);
	rb = {id, 1ull << 63, 0, 0};
	EXPECT_EQ(read_begin(rb), -EINVAL);
	rb = {id, 0, 0, 1};
	EXPECT_EQ(read_begin(rb), -EINVAL);
	rb = {0, 1, 0, 0};
	EXPECT_EQ(read_begin(rb), -EINVAL);
	rb = {id + 1000, 0, 0, ~0ull};
	EXPECT_EQ(read_begin(rb), -EINVAL);
	/* the output field may hold anything on input */
	rb = {id, 0, ~0ull, 0};
	EXPECT_EQ(read_begin(rb), 0);

	/* ids that name no watch of this file */
	const std::uint64_t big = std::uint64_t{1} << 32;
	for (std::uint64_t bad : {std::uint64_t{0}, id + 1000, big, big + id, ~std::uint64_t{0}})
		EXPECT_EQ(dev.read_begin(bad), -ENOENT) << bad;
	Dev other(0, false);
	EXPECT_EQ(other.read_begin(id), -ENOENT);
	/* an unwatched id */
	ASSERT_EQ(dev.unwatch(id), 0);
	EXPECT_EQ(dev.read_begin(id), -ENOENT);

	/* the result is written back: a read-only argument is EFAULT */
	std::uint64_t id2 = 0;
	ASSERT_EQ(dev.watch(a.get(), a.len(), 6, &id2), 0);
	void *ro = mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			-1, 0);
	ASSERT_NE(ro, MAP_FAILED);
	ASSERT_EQ(mprotect(static_cast<char *>(ro) + kPage, kPage, PROT_NONE), 0);
	*static_cast<mrsync_kmod_read_begin *>(ro) = {id2, 0, 0, 0};
	ASSERT_EQ(mprotect(ro, kPage, PROT_READ), 0);
	EXPECT_EQ(xioctl(dev.fd(), MRSYNC_IOC_READ_BEGIN, ro), -EFAULT);
	/* an argument that ends in the inaccessible page */
	void *edge = static_cast<char *>(ro) + kPage - 8;
	ASSERT_EQ(mprotect(ro, kPage, PROT_READ | PROT_WRITE), 0);
	EXPECT_EQ(xioctl(dev.fd(), MRSYNC_IOC_READ_BEGIN, edge), -EFAULT);
	munmap(ro, 2 * kPage);
	EXPECT_EQ(xioctl(dev.fd(), MRSYNC_IOC_READ_BEGIN, nullptr), -EFAULT);
}

TEST(Abi, SetRing)
{
	Fd fd;
	auto set = [&](std::uint64_t entries, std::uint64_t flags = 0) {
		mrsync_kmod_ring_config c{entries, flags};
		return xioctl(fd.get(), MRSYNC_IOC_SET_RING, &c);
	};
	EXPECT_EQ(set(16, 1), -EINVAL);
	EXPECT_EQ(set(16, 1ull << 63), -EINVAL);
	EXPECT_EQ(set(0), -ERANGE);
	EXPECT_EQ(set(MRSYNC_RING_MAX * 2), -ERANGE);
	EXPECT_EQ(set(~0ull), -ERANGE);
	EXPECT_EQ(set(3), -EINVAL);
	EXPECT_EQ(set(1000), -EINVAL);
	EXPECT_EQ(set(MRSYNC_RING_MAX), 0);
	EXPECT_EQ(set(1), 0);
	EXPECT_EQ(set(8), 0); /* may change until the first watch or mmap */

	void *p = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd.get(), 0);
	ASSERT_NE(p, MAP_FAILED);
	auto *hdr = static_cast<const mrsync_kmod_header *>(p);
	EXPECT_EQ(hdr->ring_size, 8u);
	EXPECT_EQ(set(16), -EBUSY);
	munmap(p, kPage);
	EXPECT_EQ(set(16), -EBUSY); /* still: entries may have been seen */
}

TEST(Abi, SetRingAfterWatchIsEBUSY)
{
	Fd fd;
	Anon a(kPage);
	mrsync_kmod_watch w = watch_arg(a.addr(), kPage);
	ASSERT_EQ(watch_raw(fd.get(), w), 0);
	mrsync_kmod_ring_config c{16, 0};
	EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_SET_RING, &c), -EBUSY);
}

TEST(Abi, WatchFieldChecks)
{
	Fd fd;
	Anon a(4 * kPage);
	const std::uint64_t base = a.addr();

	mrsync_kmod_watch w = watch_arg(base, kPage);
	w.flags = 1;
	EXPECT_EQ(watch_raw(fd.get(), w), -EINVAL);
	w = watch_arg(base, kPage);
	w.reserved = 1;
	EXPECT_EQ(watch_raw(fd.get(), w), -EINVAL);

	EXPECT_EQ(watch_raw(fd.get(), watch_arg(base + 1, kPage)), -EINVAL);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(base + kPage / 2, kPage)), -EINVAL);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(base, kPage + 1)), -EINVAL);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(base, 100)), -EINVAL);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(base, 0)), -ENODATA);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(0, 0)), -ENODATA);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(~0ull - kPage + 1, 2 * kPage)), -EOVERFLOW);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(~0ull - kPage + 1, kPage)), -EOVERFLOW);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(kPage, ~0ull - kPage + 1)), -EOVERFLOW);
	/* beyond any user address space, 4 or 5 level page tables */
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(1ull << 57, kPage)), -ERANGE);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(0xffff800000000000ull, kPage)), -ERANGE);
	EXPECT_EQ(watch_raw(fd.get(), watch_arg(kPage, (1ull << 57))), -ERANGE);
	/* nothing was created by the failures */
	mrsync_kmod_stats st{};
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_STATS, &st), 0);
	EXPECT_EQ(st.watches, 0u);

	/* valid: mapped, unmapped, page 0; ids are distinct and not 0 */
	w = watch_arg(base, 4 * kPage);
	ASSERT_EQ(watch_raw(fd.get(), w), 0);
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_WATCH, &w), 0);
	std::uint64_t id1 = w.id;
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_WATCH, &w), 0);
	EXPECT_NE(id1, 0u);
	EXPECT_NE(w.id, id1);
	w = watch_arg(0, kPage);
	EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_WATCH, &w), 0);
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_STATS, &st), 0);
	EXPECT_EQ(st.watches, 4u);
}

TEST(Abi, WatchLimitIsENOSPC)
{
	const std::string old = read_param("max_watches");
	ASSERT_FALSE(old.empty());
	ASSERT_TRUE(write_param("max_watches", "4"));
	{
		Fd fd;
		Anon a(kPage);
		std::uint64_t ids[4];
		for (auto &id : ids) {
			mrsync_kmod_watch w = watch_arg(a.addr(), kPage);
			ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_WATCH, &w), 0);
			id = w.id;
		}
		EXPECT_EQ(watch_raw(fd.get(), watch_arg(a.addr(), kPage)), -ENOSPC);
		/* per file: another file still has room */
		Fd other;
		EXPECT_EQ(watch_raw(other.get(), watch_arg(a.addr(), kPage)), 0);
		/* unwatching makes room again */
		mrsync_kmod_unwatch u{ids[2], 0};
		EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_UNWATCH, &u), 0);
		EXPECT_EQ(watch_raw(fd.get(), watch_arg(a.addr(), kPage)), 0);
	}
	EXPECT_TRUE(write_param("max_watches", old));
}

TEST(Abi, Unwatch)
{
	Fd fd;
	Anon a(kPage);
	mrsync_kmod_watch w = watch_arg(a.addr(), kPage);
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_WATCH, &w), 0);

	mrsync_kmod_unwatch u{w.id, 1};
	EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_UNWATCH, &u), -EINVAL);
	for (std::uint64_t bad : {0ull, w.id + 1000, 1ull << 32, ~0ull}) {
		u = {bad, 0};
		EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_UNWATCH, &u), -ENOENT) << bad;
	}
	/* ids are per file */
	Fd other;
	u = {w.id, 0};
	EXPECT_EQ(xioctl(other.get(), MRSYNC_IOC_UNWATCH, &u), -ENOENT);
	EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_UNWATCH, &u), 0);
	EXPECT_EQ(xioctl(fd.get(), MRSYNC_IOC_UNWATCH, &u), -ENOENT);
}

TEST(Abi, Consume)
{
	Dev dev;
	Anon a(kPage);
	std::uint64_t id = 0;
	ASSERT_EQ(dev.watch(a.get(), kPage, 7, &id), 0);
	mrsync_kmod_consume c{0, 1};
	EXPECT_EQ(xioctl(dev.fd(), MRSYNC_IOC_CONSUME, &c), -EINVAL);
	EXPECT_EQ(dev.consume(1), -ERANGE); /* beyond head */
	EXPECT_EQ(dev.consume(0), 0);
	munmap(a.get(), kPage);
	a.release();
	ASSERT_EQ(dev.hdr()->head, 1u);
	EXPECT_EQ(dev.consume(2), -ERANGE);
	EXPECT_EQ(dev.consume(1), 0);
	EXPECT_EQ(dev.hdr()->tail, 1u);
	EXPECT_EQ(dev.consume(0), -ERANGE); /* below tail */
	EXPECT_EQ(dev.consume(1), 0);
}

TEST(Abi, Stats)
{
	Dev dev;
	mrsync_kmod_stats st = dev.stats();
	EXPECT_EQ(st.watches, 0u);
	EXPECT_EQ(st.ring_size, static_cast<std::uint64_t>(MRSYNC_RING_DEFAULT));
	EXPECT_EQ(st.generation, 0u);
	Anon a(2 * kPage);
	ASSERT_EQ(dev.watch(a.get(), kPage, 1, nullptr), 0);
	munmap(a.get(), 2 * kPage);
	a.release();
	st = dev.stats();
	EXPECT_EQ(st.watches, 1u);
	EXPECT_EQ(st.recorded, 1u);
	EXPECT_EQ(st.generation, 1u);
	EXPECT_EQ(st.head, 1u);
	EXPECT_EQ(st.generation, dev.generation());
}

TEST(Abi, MmapRules)
{
	Fd fd;
	mrsync_kmod_version v{};
	ASSERT_EQ(xioctl(fd.get(), MRSYNC_IOC_VERSION, &v), 0);

	auto try_map = [&](std::size_t len, int prot, int flags, off_t off) {
		void *p = mmap(nullptr, len, prot, flags, fd.get(), off);
		if (p == MAP_FAILED)
			return -errno;
		munmap(p, len);
		return 0;
	};
	EXPECT_EQ(try_map(kPage, PROT_READ | PROT_WRITE, MAP_SHARED, 0), -EPERM);
	EXPECT_EQ(try_map(kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, 0), -EPERM);
	EXPECT_EQ(try_map(kPage, PROT_READ | PROT_EXEC, MAP_SHARED, 0), -EPERM);
	EXPECT_EQ(try_map(kPage, PROT_READ, MAP_SHARED, kPage), -EINVAL);

	void *p = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd.get(), 0);
	ASSERT_NE(p, MAP_FAILED);
	auto *hdr = static_cast<const mrsync_kmod_header *>(p);
	EXPECT_EQ(hdr->magic, MRSYNC_MAGIC);
	EXPECT_EQ(hdr->abi_version, static_cast<std::uint64_t>(MRSYNC_ABI_VERSION));
	EXPECT_EQ(hdr->ring_offset, kPage);
	EXPECT_EQ(hdr->entry_size, sizeof(mrsync_kmod_event));
	EXPECT_EQ(hdr->ring_size, static_cast<std::uint64_t>(MRSYNC_RING_DEFAULT));
	const std::size_t map_size = hdr->map_size;
	EXPECT_EQ(map_size, kPage + MRSYNC_RING_DEFAULT * sizeof(mrsync_kmod_event));
	EXPECT_EQ(hdr->generation, 0u);
	/* read-only for good */
	EXPECT_EQ(mprotect(p, kPage, PROT_READ | PROT_WRITE), -1);
	EXPECT_EQ(errno, EACCES);
	EXPECT_EQ(mprotect(p, kPage, PROT_READ | PROT_EXEC), -1);
	/* cannot grow */
	void *q = mremap(p, kPage, 2 * kPage, 0);
	EXPECT_EQ(q, MAP_FAILED);
	munmap(p, kPage);

	EXPECT_EQ(try_map(map_size, PROT_READ, MAP_SHARED, 0), 0);
	EXPECT_EQ(try_map(map_size + kPage, PROT_READ, MAP_SHARED, 0), -EINVAL);
	EXPECT_EQ(try_map(map_size, PROT_READ, MAP_PRIVATE, 0), 0);
}

/*
 * Random commands and arguments, bounded by count and time. Commands are our
 * seven with random sizes and directions mixed in, arguments are random bytes
 * in a valid buffer or a random pointer. Watches may land anywhere, including
 * on the test's own mappings: that only makes events.
 */
TEST(Abi, RandomIoctlsLeaveTheKernelQuiet)
{
	std::mt19937_64 rng(0x6d7273796e63ull);
	const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
	const unsigned long cmds[] = {MRSYNC_IOC_VERSION, MRSYNC_IOC_SET_RING, MRSYNC_IOC_WATCH,
				      MRSYNC_IOC_UNWATCH, MRSYNC_IOC_CONSUME, MRSYNC_IOC_STATS,
				      MRSYNC_IOC_READ_BEGIN};
	alignas(8) unsigned char buf[256];
	unsigned long calls = 0;
	int results[8] = {};

	for (int round = 0; round < 200 && std::chrono::steady_clock::now() < deadline; round++) {
		Fd fd;
		ASSERT_GE(fd.get(), 0);
		void *ring = nullptr;
		if (round % 3 == 0)
			ring = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd.get(), 0);
		for (int i = 0; i < 500; i++, calls++) {
			unsigned long cmd;
			switch (rng() % 4) {
			case 0:
			case 1:
				cmd = cmds[rng() % std::size(cmds)];
				break;
			case 2:
				cmd = _IOC(rng() % 4, MRSYNC_IOC_MAGIC, rng() % 8, rng() % 256);
				break;
			default:
				cmd = static_cast<unsigned int>(rng());
				break;
			}
			for (auto &b : buf)
				b = static_cast<unsigned char>(rng());
			auto *words = reinterpret_cast<std::uint64_t *>(buf);
			switch (rng() % 5) {
			case 0: /* plausible watch: page aligned, sometimes small */
				words[0] &= ~(kPage - 1);
				words[0] &= (1ull << 47) - 1;
				words[1] = (rng() % 64) * kPage;
				words[3] = 0;
				words[5] = 0;
				break;
			case 1: /* plausible small ids, tails, ring sizes */
				words[0] = rng() % 64;
				words[1] = 0;
				words[3] = 0; /* READ_BEGIN's reserved */
				break;
			default:
				break;
			}
			void *arg = buf;
			if (rng() % 8 == 0)
				arg = reinterpret_cast<void *>(rng());
			int r = xioctl(fd.get(), cmd, arg);
			results[r == 0 ? 0 : 1]++;
		}
		if (ring && ring != MAP_FAILED)
			munmap(ring, kPage);
	}
	EXPECT_GT(calls, 1000u);
	std::printf("random ioctls: %lu calls, %d succeeded\n", calls, results[0]);
}
