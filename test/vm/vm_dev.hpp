/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the guest tests: a raw client of /dev/mrsync written straight
 * against the uapi header (independent of lib/monitor, so the tests check the
 * ABI itself), and anonymous mappings.
 */
#ifndef MRSYNC_VM_DEV_HPP
#define MRSYNC_VM_DEV_HPP

#include <linux/mrsync.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

namespace mrsync_vm {

inline const std::size_t kPage = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));

/** ioctl as 0 / -errno. */
inline int xioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) == 0 ? 0 : -errno;
}

inline int open_dev()
{
	return open("/dev/mrsync", O_RDWR | O_CLOEXEC);
}

/** An open /dev/mrsync with its ring mapped and a reader position. */
class Dev {
public:
	/** ring_entries 0 keeps the default; map false leaves it unmapped. */
	explicit Dev(std::uint64_t ring_entries = 0, bool map = true)
	{
		fd_ = open_dev();
		if (fd_ < 0) {
			perror("open /dev/mrsync");
			std::abort();
		}
		if (ring_entries) {
			mrsync_kmod_ring_config c{ring_entries, 0};
			if (xioctl(fd_, MRSYNC_IOC_SET_RING, &c) != 0)
				std::abort();
		}
		if (map)
			this->map();
	}
	~Dev()
	{
		if (hdr_)
			munmap(hdr_, map_len_);
		if (fd_ >= 0)
			close(fd_);
	}
	Dev(const Dev &) = delete;
	Dev &operator=(const Dev &) = delete;

	int fd() const { return fd_; }
	const mrsync_kmod_header *hdr() const { return hdr_; }

	void map()
	{
		/* the header page tells the size of the whole area */
		void *p = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd_, 0);
		if (p == MAP_FAILED)
			std::abort();
		std::size_t len = static_cast<const mrsync_kmod_header *>(p)->map_size;
		munmap(p, kPage);
		p = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd_, 0);
		if (p == MAP_FAILED)
			std::abort();
		hdr_ = static_cast<mrsync_kmod_header *>(p);
		map_len_ = len;
	}

	int watch(const void *addr, std::size_t len, std::uint64_t cookie, std::uint64_t *id)
	{
		mrsync_kmod_watch w{};
		w.addr = reinterpret_cast<std::uint64_t>(addr);
		w.len = len;
		w.cookie = cookie;
		int ret = xioctl(fd_, MRSYNC_IOC_WATCH, &w);
		if (ret == 0 && id)
			*id = w.id;
		return ret;
	}
	int unwatch(std::uint64_t id)
	{
		mrsync_kmod_unwatch u{id, 0};
		return xioctl(fd_, MRSYNC_IOC_UNWATCH, &u);
	}
	/** MRSYNC_IOC_READ_BEGIN on a watch; waits for its invalidation to end. */
	int read_begin(std::uint64_t id, std::uint64_t *seq = nullptr)
	{
		mrsync_kmod_read_begin rb{};
		rb.id = id;
		int ret = xioctl(fd_, MRSYNC_IOC_READ_BEGIN, &rb);
		if (ret == 0 && seq)
			*seq = rb.seq;
		return ret;
	}
	int consume(std::uint64_t tail)
	{
		mrsync_kmod_consume c{tail, 0};
		return xioctl(fd_, MRSYNC_IOC_CONSUME, &c);
	}
	mrsync_kmod_stats stats()
	{
		mrsync_kmod_stats st{};
		if (xioctl(fd_, MRSYNC_IOC_STATS, &st) != 0)
			std::abort();
		return st;
	}

	std::uint64_t generation() const
	{
		return __atomic_load_n(&hdr_->generation, __ATOMIC_ACQUIRE);
	}

	struct Drained {
		std::vector<mrsync_kmod_event> events;
		bool lost = false; /**< overflow moved, or an entry was torn */
	};

	/** Reads every published entry past the reader position, then consumes. */
	Drained drain()
	{
		Drained d;
		std::uint64_t ov = __atomic_load_n(&hdr_->overflow, __ATOMIC_ACQUIRE);
		std::uint64_t head = __atomic_load_n(&hdr_->head, __ATOMIC_ACQUIRE);
		const auto *ring = reinterpret_cast<const mrsync_kmod_event *>(
			reinterpret_cast<const char *>(hdr_) + hdr_->ring_offset);
		std::uint64_t mask = hdr_->ring_size - 1;
		for (std::uint64_t i = tail_; i < head; i++) {
			const mrsync_kmod_event *slot = &ring[i & mask];
			std::uint64_t s1 = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);
			mrsync_kmod_event e;
			e.start = __atomic_load_n(&slot->start, __ATOMIC_RELAXED);
			e.end = __atomic_load_n(&slot->end, __ATOMIC_RELAXED);
			e.cookie = __atomic_load_n(&slot->cookie, __ATOMIC_RELAXED);
			e.id = __atomic_load_n(&slot->id, __ATOMIC_RELAXED);
			e.reason = __atomic_load_n(&slot->reason, __ATOMIC_RELAXED);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			std::uint64_t s2 = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
			if (s1 != i + 1 || s2 != s1) {
				d.lost = true;
				continue;
			}
			e.seq = s1;
			d.events.push_back(e);
		}
		if (head != tail_ && consume(head) != 0)
			std::abort();
		tail_ = head;
		if (ov != overflow_seen_)
			d.lost = true;
		overflow_seen_ = ov;
		return d;
	}

private:
	int fd_ = -1;
	mrsync_kmod_header *hdr_ = nullptr;
	std::size_t map_len_ = 0;
	std::uint64_t tail_ = 0;
	std::uint64_t overflow_seen_ = 0;
};

/** An anonymous private read/write mapping, unmapped on destruction. */
class Anon {
public:
	explicit Anon(std::size_t len, void *at = nullptr, int flags = 0) : len_(len)
	{
		p_ = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1,
			  0);
		if (p_ == MAP_FAILED)
			std::abort();
	}
	~Anon()
	{
		if (p_)
			munmap(p_, len_);
	}
	Anon(const Anon &) = delete;
	Anon &operator=(const Anon &) = delete;

	char *get() const { return static_cast<char *>(p_); }
	std::uint64_t addr() const { return reinterpret_cast<std::uint64_t>(p_); }
	std::size_t len() const { return len_; }
	void touch() const
	{
		for (std::size_t off = 0; off < len_; off += kPage)
			get()[off] = 1;
	}
	/** The caller unmapped (part of) it itself: forget it. */
	void release() { p_ = nullptr; }

private:
	void *p_;
	std::size_t len_;
};

} // namespace mrsync_vm

#endif
