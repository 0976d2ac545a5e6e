#include "churn_workload.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */
#include <mrsync/uring.hpp>

#include "cli.hpp"

namespace mrsync::workload {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kHugePage = 2ull << 20;
constexpr std::size_t kMaxWidePages = 4; /* a wide DMA spans 2 .. this many pages */

/* What backs a page now. */
enum class Kind : std::uint8_t {
	anon,  /* private anonymous memory (or a PROT_NONE guard, see Page::mapped) */
	shm,   /* a SysV shm segment attached over it */
	memfd, /* its own page of the buffer's memfd, MAP_SHARED */
};

struct Page {
	std::uint64_t addr = 0;
	std::uint64_t size = 0;
	bool huge = false;
	std::size_t buffer = 0;        /* index in Arena::buffers() */
	std::uint64_t file_offset = 0; /* memfd pages: where in the file */
	bool mapped = true;            /* guarded by lock */
	Kind kind = Kind::anon;        /* guarded by lock */
	std::mutex lock;
	/* The last changes (guarded by lock): printed with the first lost
	 * write, so that a rare loss says what happened to its pages. */
	struct Change {
		const char *what = nullptr;
		std::uint64_t ns = 0;
	};
	std::array<Change, 4> history{};
	unsigned changes = 0;

	void note(const char *what)
	{
		const auto ns = std::chrono::steady_clock::now().time_since_epoch();
		history[changes++ % history.size()] = {
			what, std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(ns).count())};
	}
};

/* One registration's worth of memory: pages [first, first + count). */
struct Buffer {
	std::uint64_t base = 0;
	std::uint64_t len = 0;
	std::size_t first = 0;
	std::size_t count = 0;
	bool huge = false;
	int memfd = -1; /* memfd buffers: the file, owned by the arena */
};

/* Counters shared by the threads; the report is a snapshot of them. */
struct Counters {
	std::atomic<std::uint64_t> ops{0}, dma_writes{0}, wide_writes{0}, lost{0}, refused{0};
	std::atomic<std::uint64_t> lost_by[4]{}; /* by LossKind */
	std::atomic<std::uint64_t> unmapped_gets{0}, unwatchable_gets{0};
	std::atomic<std::uint64_t> churn{0}, huge_churn{0}, shm_churn{0}, memfd_churn{0};
	std::atomic<std::uint64_t> hints{0}, hints_refused{0}, errors{0};
	std::mutex error_lock;
	std::string first_error;

	void error(const std::string &what)
	{
		errors.fetch_add(1);
		std::lock_guard g(error_lock);
		if (first_error.empty())
			first_error = what;
	}

	Report snapshot() const
	{
		Report r;
		r.ops = ops.load();
		r.dma_writes = dma_writes.load();
		r.wide_writes = wide_writes.load();
		r.lost_writes = lost.load();
		for (std::size_t k = 0; k < std::size(lost_by); ++k)
			r.lost_by[k] = lost_by[k].load();
		r.refused = refused.load();
		r.unmapped_gets = unmapped_gets.load();
		r.unwatchable_gets = unwatchable_gets.load();
		r.churn_ops = churn.load();
		r.hugepage_ops = huge_churn.load();
		r.shm_ops = shm_churn.load();
		r.memfd_ops = memfd_churn.load();
		r.hints = hints.load();
		r.hints_refused = hints_refused.load();
		r.errors = errors.load();
		return r;
	}
};

int map_flags(bool huge)
{
	return MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0);
}

void *fresh_mapping(std::uint64_t addr, std::uint64_t len, bool huge)
{
	return mmap(reinterpret_cast<void *>(addr), len, PROT_READ | PROT_WRITE,
		    map_flags(huge) | (addr ? MAP_FIXED : 0), -1, 0);
}

/* The page's own page of its memfd, mapped again at its address. */
bool map_file_page(const Page &page, int memfd)
{
	const auto offset = static_cast<off_t>(page.file_offset);
	return mmap(reinterpret_cast<void *>(page.addr), page.size, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_FIXED, memfd, offset) != MAP_FAILED;
}

bool hugepages_free(unsigned wanted)
{
	std::ifstream meminfo("/proc/meminfo");
	std::string line;
	while (std::getline(meminfo, line))
		if (line.rfind("HugePages_Free:", 0) == 0)
			return std::stoul(line.substr(15)) >= wanted;
	return false;
}

/* Whether the kernel module is among the sources of a context created with
 * mrsync_params::sources = `sources` (0: automatic, the module when
 * /dev/mrsync exists). It sees every change; userfaultfd does not. */
bool module_is_source(std::uint32_t sources)
{
	if (!sources)
		return access("/dev/mrsync", F_OK) == 0;
	return (sources & MRSYNC_SOURCE_KMOD) != 0;
}

/* A SysV shm segment of `len` bytes, attached at `addr` (SHM_REMAP: over
 * what is mapped there) or anywhere (addr 0), and marked for removal at once
 * so that it goes away with its last detach, even if the process dies.
 * @return the address, or MAP_FAILED with errno set. */
void *attach_new_segment(std::uint64_t addr, std::uint64_t len, bool huge, int flags)
{
	const int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600 | (huge ? SHM_HUGETLB : 0));
	if (id < 0)
		return MAP_FAILED;
	void *at = shmat(id, reinterpret_cast<void *>(addr), flags);
	const int saved = errno;
	shmctl(id, IPC_RMID, nullptr);
	errno = saved;
	return at == reinterpret_cast<void *>(-1) ? MAP_FAILED : at;
}

/*
 * Whether the context's driver can pin a 4 KiB SysV shm page. Debian 6.1's
 * io_uring (the QEMU guest) cannot: it long-term pins anonymous, shmem-file
 * and hugetlbfs memory only, so the workload then attaches shm over its
 * hugepages only. The one call the workload makes to the driver itself, made
 * before any thread runs and undone at once (a pin no translation used).
 */
bool driver_pins_small_shm(Driver &driver)
{
	void *at = attach_new_segment(0, kPage, false, 0);
	if (at == MAP_FAILED)
		return false;
	auto pinned = driver.pin(reinterpret_cast<std::uint64_t>(at), kPage);
	if (pinned)
		driver.unpin(*pinned);
	shmdt(at);
	return pinned.ok();
}

/* The workload's memory: buffers carved into pages, each with its lock. */
class Arena {
public:
	Arena() = default;
	Arena(const Arena &) = delete;
	Arena &operator=(const Arena &) = delete;
	~Arena()
	{
		for (auto &p : pages_) /* mapped, a shm attachment, or a PROT_NONE guard */
			munmap(reinterpret_cast<void *>(p->addr), p->size);
		for (const auto &b : buffers_)
			if (b.memfd >= 0)
				close(b.memfd);
	}

	/* Private anonymous memory, 4 KiB pages or hugepages. */
	Status add_buffer(unsigned pages, bool huge)
	{
		const std::uint64_t unit = huge ? kHugePage : kPage;
		void *base = fresh_mapping(0, pages * unit, huge);
		if (base == MAP_FAILED)
			return make_error(errno, std::string("mmap of a buffer failed: ") +
							 std::strerror(errno));
		add(Buffer{.base = reinterpret_cast<std::uint64_t>(base), .len = pages * unit,
			   .huge = huge},
		    unit, Kind::anon);
		return {};
	}

	/* A memfd of `pages` 4 KiB pages, mapped shared. */
	Status add_memfd_buffer(unsigned pages)
	{
		const auto fail = [](const char *what) {
			return make_error(errno, std::string(what) + " of a memfd buffer failed: " +
							 std::strerror(errno));
		};
		const int fd = memfd_create("mrsync-workload", MFD_CLOEXEC);
		if (fd < 0)
			return fail("memfd_create");
		const std::uint64_t len = pages * kPage;
		void *base = MAP_FAILED;
		if (ftruncate(fd, static_cast<off_t>(len)) == 0)
			base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) {
			auto error = fail("mapping");
			close(fd);
			return error;
		}
		add(Buffer{.base = reinterpret_cast<std::uint64_t>(base), .len = len, .memfd = fd},
		    kPage, Kind::memfd);
		return {};
	}

	std::span<const std::unique_ptr<Page>> pages() const { return pages_; }
	std::span<const Buffer> buffers() const { return buffers_; }
	const Buffer &buffer_of(const Page &page) const { return buffers_[page.buffer]; }

private:
	void add(Buffer buffer, std::uint64_t unit, Kind kind)
	{
		std::memset(reinterpret_cast<void *>(buffer.base), 0, buffer.len);
		buffer.first = pages_.size();
		buffer.count = buffer.len / unit;
		for (std::size_t i = 0; i < buffer.count; ++i) {
			auto p = std::make_unique<Page>();
			p->addr = buffer.base + i * unit;
			p->size = unit;
			p->huge = buffer.huge;
			p->buffer = buffers_.size();
			p->file_offset = i * unit;
			p->kind = kind;
			pages_.push_back(std::move(p));
		}
		buffers_.push_back(buffer);
	}

	std::vector<std::unique_ptr<Page>> pages_;
	std::vector<Buffer> buffers_;
};

/* Locks a run of pages in address order (the order every thread that takes
 * several uses) and unlocks them when it goes. */
class RunLock {
public:
	explicit RunLock(std::span<const std::unique_ptr<Page>> run)
	{
		for (std::size_t i = 0; i < run.size(); ++i)
			locks_.emplace_back(run[i]->lock);
	}

private:
	std::vector<std::unique_lock<std::mutex>> locks_;
};

/* Random bytes, none zero (a fresh page reads zero), in one draw per 8. */
void fill_pattern(std::span<std::byte> out, std::mt19937_64 &rng)
{
	for (std::size_t i = 0; i < out.size(); i += 8) {
		const std::uint64_t r = rng() | 0x0101010101010101ull;
		std::memcpy(out.data() + i, &r, std::min<std::size_t>(8, out.size() - i));
	}
}

/* The first lost write, with what happened to its pages lately: a loss in
 * a long run must say enough to be understood without a rerun. */
void describe_first_loss(const Registration &reg, std::uint64_t va, std::uint64_t len,
			 std::span<const std::unique_ptr<Page>> run)
{
	const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
		std::chrono::steady_clock::now().time_since_epoch()).count();
	std::fprintf(stderr, "first lost write: [0x%llx, +%llu) through [0x%llx, +0x%llx) "
		     "lkey 0x%x\n", (unsigned long long)va, (unsigned long long)len,
		     (unsigned long long)reg.addr(), (unsigned long long)reg.length(), reg.lkey());
	static const char *const kinds[] = {"anon", "shm", "memfd"};
	for (const auto &p : run) {
		std::fprintf(stderr, "  page 0x%llx %s%s%s, changes %u, latest first:",
			     (unsigned long long)p->addr, kinds[std::size_t(p->kind)],
			     p->huge ? " huge" : "", p->mapped ? "" : " unmapped", p->changes);
		for (unsigned i = 0; i < std::min<unsigned>(p->changes, p->history.size()); ++i) {
			const auto &h = p->history[(p->changes - 1 - i) % p->history.size()];
			std::fprintf(stderr, " %s (%.1f us ago);", h.what,
				     double(std::uint64_t(now) - h.ns) / 1e3);
		}
		std::fprintf(stderr, "\n");
	}
}

/*
 * One DMA write of random bytes into a run of adjacent pages of one buffer,
 * through one lookup, checked: inside the page for a run of one, from
 * somewhere in the first page to somewhere in the last otherwise.
 */
void dma_once(Context &ctx, const DmaWrite &dma, std::span<const std::unique_ptr<Page>> run,
	      std::mt19937_64 &rng, std::uint64_t user_data, std::vector<std::byte> &pattern,
	      Counters &c)
{
	RunLock guard(run);
	const Page &first = *run.front(), &last = *run.back();
	std::uint64_t va, len;
	if (run.size() == 1) {
		len = 8 + rng() % 248;
		va = first.addr + rng() % (first.size - len);
	} else {
		va = first.addr + rng() % first.size;
		len = last.addr + 1 + rng() % last.size - va;
	}
	pattern.resize(len);
	fill_pattern(pattern, rng);
	const bool all_mapped = std::all_of(run.begin(), run.end(),
					    [](const auto &p) { return p->mapped; });
	const auto any = [run](Kind kind) {
		return std::any_of(run.begin(), run.end(),
				   [kind](const auto &p) { return p->kind == kind; });
	};
	const bool unwatchable = any(Kind::shm) || any(Kind::memfd);

	auto reg = ctx.get(reinterpret_cast<void *>(va), len);
	if (!reg) {
		if (reg.error().code == EFAULT && !all_mapped)
			c.unmapped_gets.fetch_add(1);
		else if (reg.error().code == ENOTSUP && unwatchable)
			c.unwatchable_gets.fetch_add(1);
		else
			c.error("get: " + reg.error().message);
		return;
	}
	auto done = dma(*reg, va, pattern, user_data);
	if (!done) {
		c.error("dma: " + done.error().message);
		return;
	}
	if (*done < 0) {
		c.refused.fetch_add(1);
		return;
	}
	c.dma_writes.fetch_add(1);
	if (run.size() > 1)
		c.wide_writes.fetch_add(1);
	/* Silent loss: the device wrote somewhere the application cannot see. */
	if (all_mapped && std::memcmp(reinterpret_cast<void *>(va), pattern.data(), len) == 0)
		return;
	if (c.lost.fetch_add(1) == 0)
		describe_first_loss(*reg, va, len, run);
	c.lost_by[std::size_t(any(Kind::memfd) ? LossKind::memfd
			      : any(Kind::shm) ? LossKind::shm
			      : first.huge     ? LossKind::hugepage
					       : LossKind::anon)]
		.fetch_add(1);
}

/* Where the churn thread parks pages it moves with mremap: its own reserved
 * (PROT_NONE) area, so the kernel never picks a hole of a workload buffer. */
class Scratch {
public:
	Scratch()
	{
		void *p = mmap(nullptr, kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		base_ = p == MAP_FAILED ? nullptr : p;
	}
	~Scratch()
	{
		if (base_)
			munmap(base_, kHugePage);
	}
	explicit operator bool() const { return base_ != nullptr; }
	void *addr() const { return base_; }
	/* Back to a reservation once a page parked here is gone. */
	void reset(std::uint64_t len)
	{
		mmap(base_, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	}

private:
	void *base_ = nullptr;
};

/* An unmapped page stays a hole only for an instant: a PROT_NONE guard takes
 * its place, so no other mmap() of the process (a thread stack, a malloc
 * arena) can land where DMA threads still aim. The guard cannot be pinned,
 * so lookups of the page fail just as for a hole. */
bool unmap_and_guard(Page &page)
{
	if (munmap(reinterpret_cast<void *>(page.addr), page.size) != 0)
		return false;
	return mmap(reinterpret_cast<void *>(page.addr), page.size, PROT_NONE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED;
}

/* A fresh private page (or hugepage) at the page's address. A hugepage may
 * have to wait for one the cache still pins (released at its next resync;
 * io_uring lets go asynchronously): retried for up to 100 ms before it counts
 * as a failure. A failed MAP_FIXED may leave a hole: it is guarded and the
 * page counts as unmapped. @return false with errno set on failure. */
bool map_fresh(Page &page)
{
	for (int attempt = 0;; ++attempt) {
		if (fresh_mapping(page.addr, page.size, page.huge) != MAP_FAILED) {
			page.mapped = true;
			page.kind = Kind::anon;
			return true;
		}
		if (!page.huge || errno != ENOMEM || attempt == 100)
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	const int saved = errno;
	unmap_and_guard(page);
	page.mapped = false;
	page.kind = Kind::anon;
	errno = saved;
	return false;
}

/* What the mutator may do besides the plain changes. */
struct MutatorCaps {
	bool small_shm = false; /* attach shm over 4 KiB pages (the driver can pin it) */
	bool huge_shm = false;  /* attach SHM_HUGETLB segments over hugepages */
	bool shm_remap = false; /* shmat(SHM_REMAP): only a source that sees it */
};

/* A SysV shm segment takes the page's place: munmap + shmat at its address,
 * or shmat(SHM_REMAP) over it. Out of hugepages for the segment (a stale pin
 * may still hold the one just freed): a fresh private hugepage instead.
 * @return false with errno set on failure. Called with the page's lock. */
bool attach_shm(Page &page, bool remap, Counters &c)
{
	if (!remap && munmap(reinterpret_cast<void *>(page.addr), page.size) != 0)
		return false;
	if (attach_new_segment(page.addr, page.size, page.huge, remap ? SHM_REMAP : 0) !=
	    MAP_FAILED) {
		page.kind = Kind::shm;
		c.shm_churn.fetch_add(1);
		return true;
	}
	if (page.huge && (errno == ENOMEM || errno == ENOSPC))
		return map_fresh(page);
	if (!remap) { /* a hole now: guard it */
		const int saved = errno;
		unmap_and_guard(page);
		page.mapped = false;
		errno = saved;
	}
	return false;
}

/* MADV_DONTNEED over pages [index, index + n) of a 4 KiB-page buffer, n >= 2
 * (an allocator giving back a large block): the zap runs page after page
 * after one event for the whole range, so the later pages stay mapped for a
 * while after the event: race B's window, wide. Whatever is mapped there
 * (a guard, shm) takes it. */
void dontneed_run(const Arena &arena, std::size_t index, std::mt19937_64 &rng, Counters &c)
{
	const Buffer &buffer = arena.buffer_of(*arena.pages()[index]);
	const std::size_t left = buffer.first + buffer.count - index;
	const auto run = arena.pages().subspan(index, 2 + rng() % (left - 1));
	RunLock guard(run);
	if (madvise(reinterpret_cast<void *>(run.front()->addr), run.size() * kPage,
		    MADV_DONTNEED) != 0)
		return c.error(std::string("madvise of a run: ") + std::strerror(errno));
	for (const auto &page : run)
		page->note("DONTNEED run");
	c.churn.fetch_add(1);
}

/* One change of a page of a private (anonymous or hugepage) buffer, the kind
 * picked at random. */
void change_private(const Arena &arena, std::size_t index, Scratch &scratch,
		    const MutatorCaps &caps, std::mt19937_64 &rng, Counters &c)
{
	Page &page = *arena.pages()[index];
	const unsigned op = rng() % 8;
	const Buffer &buffer = arena.buffer_of(page);
	if (op == 7 && !page.huge && index + 1 < buffer.first + buffer.count)
		return dontneed_run(arena, index, rng, c);
	std::lock_guard guard(page.lock);
	auto *addr = reinterpret_cast<void *>(page.addr);
	const auto fail = [&](const char *what) {
		c.error(std::string(what) + ": " + std::strerror(errno));
	};
	if (!page.mapped) {
		if (!map_fresh(page))
			return fail("mmap back");
		page.note("mapped back");
	} else if (page.kind == Kind::shm) { /* detach: anonymous memory again */
		if (shmdt(addr) != 0)
			return fail("shmdt");
		if (!map_fresh(page))
			return fail("mmap after shmdt");
		page.note("shmdt, fresh");
		c.shm_churn.fetch_add(1);
	} else {
		switch (op) {
		case 0: /* a fresh page at the same address */
			if (!map_fresh(page))
				return fail("mmap MAP_FIXED");
			page.note("fresh MAP_FIXED");
			break;
		case 1: /* gone; lookups must fail until it comes back */
			if (!unmap_and_guard(page))
				return fail("munmap");
			page.mapped = false;
			page.note("unmapped");
			break;
		case 2: /* the next touch gets a new zero page (race B's change) */
		case 3:
			if (madvise(addr, page.size, MADV_DONTNEED) != 0)
				return fail("madvise");
			page.note("DONTNEED");
			break;
		case 4: /* the page moves away; a fresh one takes its place */
		case 5: /* away and back: the same physical page returns */
			if (page.huge) { /* hugetlb mremap is not what we test: remap */
				if (!map_fresh(page))
					return fail("mmap MAP_FIXED");
				break;
			}
			if (mremap(addr, page.size, page.size, MREMAP_MAYMOVE | MREMAP_FIXED,
				   scratch.addr()) == MAP_FAILED)
				return fail("mremap");
			if (rng() % 2) {
				if (mremap(scratch.addr(), page.size, page.size,
					   MREMAP_MAYMOVE | MREMAP_FIXED, addr) == MAP_FAILED)
					return fail("mremap back");
			} else if (!map_fresh(page)) {
				return fail("mmap after mremap");
			}
			scratch.reset(page.size);
			page.note("mremap");
			break;
		case 6: /* SysV shm over it, detached by a later change */
		case 7: /* (the last page of its buffer: no run) */
			if (!(page.huge ? caps.huge_shm : caps.small_shm)) {
				if (madvise(addr, page.size, MADV_DONTNEED) != 0)
					return fail("madvise");
				page.note("DONTNEED (no shm)");
				break;
			}
			if (!attach_shm(page, caps.shm_remap && rng() % 2, c))
				return fail("shm attach");
			page.note(page.kind == Kind::shm ? "shm attached" : "shm attach failed");
			break;
		}
	}
	c.churn.fetch_add(1);
	if (page.huge)
		c.huge_churn.fetch_add(1);
}

/* One change of a page of a memfd buffer: its file page is punched out,
 * truncated away and back (with every later page of the file, all locked),
 * zapped from the page tables, or mapped again. */
void change_memfd(const Arena &arena, std::size_t index, std::mt19937_64 &rng, Counters &c)
{
	const Page &page = *arena.pages()[index];
	const Buffer &buffer = arena.buffer_of(page);
	const auto fail = [&](const char *what) {
		c.error(std::string(what) + ": " + std::strerror(errno));
	};
	const auto off = static_cast<off_t>(page.file_offset);
	const unsigned op = rng() % 4;
	/* truncation takes every page from this one to the end of the file */
	const std::size_t locked = op == 1 ? buffer.first + buffer.count - index : 1;
	RunLock guard(arena.pages().subspan(index, locked));
	switch (op) {
	case 0:
		if (fallocate(buffer.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
			      static_cast<off_t>(page.size)) != 0)
			return fail("fallocate(PUNCH_HOLE)");
		break;
	case 1:
		if (ftruncate(buffer.memfd, off) != 0 ||
		    ftruncate(buffer.memfd, static_cast<off_t>(buffer.len)) != 0)
			return fail("ftruncate");
		break;
	case 2:
		if (madvise(reinterpret_cast<void *>(page.addr), page.size, MADV_DONTNEED) != 0)
			return fail("madvise");
		break;
	case 3:
		if (!map_file_page(page, buffer.memfd))
			return fail("mmap MAP_FIXED of the memfd");
		break;
	}
	c.churn.fetch_add(1);
	c.memfd_churn.fetch_add(1);
}

/* Picks what a DMA thread writes next: one page, or (wide_percent of the
 * time) 2 to kMaxWidePages adjacent pages of one 4 KiB-page buffer. */
std::span<const std::unique_ptr<Page>> pick_run(const Arena &arena,
						std::span<const std::size_t> wide_buffers,
						unsigned wide_percent, std::mt19937_64 &rng)
{
	const auto pages = arena.pages();
	if (wide_buffers.empty() || rng() % 100 >= wide_percent)
		return pages.subspan(rng() % pages.size(), 1);
	const Buffer &b = arena.buffers()[wide_buffers[rng() % wide_buffers.size()]];
	const std::size_t n = std::min<std::size_t>(b.count, 2 + rng() % (kMaxWidePages - 1));
	return pages.subspan(b.first + rng() % (b.count - n + 1), n);
}

using Clock = std::chrono::steady_clock;

/* One run's threads and what they share. The workers (DMA threads and the
 * mutator) do the operations and end the run; the helpers (the hinter, CPU
 * burners, the progress reporter) run alongside until then. */
class Threads {
public:
	Threads(Context &ctx, DmaWrite dma, const Options &options, const Arena &arena,
		MutatorCaps caps)
		: ctx_(ctx), dma_(std::move(dma)), options_(options), arena_(arena), caps_(caps),
		  churn_ops_(options.ops * options.churn_percent / 100),
		  dma_ops_(options.ops - churn_ops_), dma_running_(options.dma_threads)
	{
		for (std::size_t b = 0; b < arena.buffers().size(); ++b)
			if (!arena.buffers()[b].huge && arena.buffers()[b].count > 1)
				wide_buffers_.push_back(b);
	}

	/* @return the counters once every worker is done. */
	Report run()
	{
		start_ = Clock::now();
		const std::chrono::duration<double> budget(options_.seconds);
		deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(budget);
		std::vector<std::thread> workers, helpers;
		for (unsigned t = 0; t < options_.dma_threads; ++t)
			workers.emplace_back([this, t] { dma_thread(t); });
		workers.emplace_back([this] { mutator_thread(); });
		if (options_.hinter)
			helpers.emplace_back([this] { hinter_thread(); });
		for (unsigned t = 0; t < options_.stress_threads; ++t)
			helpers.emplace_back([this] { stress_thread(); });
		if (options_.progress)
			helpers.emplace_back([this] { progress_thread(); });
		for (auto &t : workers)
			t.join();
		done_.store(true);
		for (auto &t : helpers)
			t.join();
		Report report = c_.snapshot();
		report.first_error = c_.first_error;
		report.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
		return report;
	}

private:
	static constexpr auto kRelaxed = std::memory_order_relaxed;

	void dma_thread(unsigned t)
	{
		std::mt19937_64 rng(options_.seed * 1000 + t);
		std::vector<std::byte> pattern;
		const unsigned n = options_.dma_threads;
		const std::uint64_t mine = dma_ops_ / n + (t < dma_ops_ % n);
		for (std::uint64_t i = 0; i < mine && !stop_.load(kRelaxed); ++i) {
			const auto run = pick_run(arena_, wide_buffers_, options_.wide_percent,
						  rng);
			const std::uint64_t tag = (std::uint64_t(t + 1) << 48) | i;
			dma_once(ctx_, dma_, run, rng, tag, pattern, c_);
			dma_done_.fetch_add(1, kRelaxed);
			c_.ops.fetch_add(1, kRelaxed);
			if ((options_.stop_at_first_loss && c_.lost.load(kRelaxed)) ||
			    (options_.seconds > 0 && Clock::now() > deadline_))
				stop_.store(true);
		}
		dma_running_.fetch_sub(1);
	}

	void mutator_thread()
	{
		std::mt19937_64 rng(options_.seed * 1000 + 999);
		Scratch scratch;
		if (!scratch)
			c_.error("cannot reserve the scratch area");
		const auto pages = arena_.pages();
		for (std::uint64_t i = 0; scratch && i < churn_ops_ && !stop_.load(); ++i) {
			/* Paced: the changes spread over the whole run, not its start. */
			while (dma_done_.load(kRelaxed) < i * dma_ops_ / churn_ops_ &&
			       dma_running_.load(kRelaxed) && !stop_.load())
				std::this_thread::sleep_for(std::chrono::microseconds(20));
			const std::size_t index = rng() % pages.size();
			if (arena_.buffer_of(*pages[index]).memfd >= 0)
				change_memfd(arena_, index, rng, c_);
			else
				change_private(arena_, index, scratch, caps_, rng, c_);
			c_.ops.fetch_add(1, kRelaxed);
		}
	}

	/* Whole buffers, no page lock: its pins race every change. A hint
	 * holds the context lock throughout; one that took long (a resync,
	 * re-pins, a refusal) is followed by a pause as long, so that lookups
	 * get the lock at least half the time. */
	void hinter_thread()
	{
		std::mt19937_64 rng(options_.seed * 1000 + 998);
		const auto buffers = arena_.buffers();
		for (auto took = Clock::duration(); !done_.load(kRelaxed);) {
			if (took > std::chrono::microseconds(20))
				std::this_thread::sleep_for(took);
			const Buffer &b = buffers[rng() % buffers.size()];
			const auto start = Clock::now();
			auto ok = ctx_.hint(reinterpret_cast<void *>(b.base), b.len);
			took = Clock::now() - start;
			if (ok)
				c_.hints.fetch_add(1, kRelaxed);
			else if (ok.error().code == EFAULT || ok.error().code == ENOTSUP)
				c_.hints_refused.fetch_add(1, kRelaxed);
			else
				c_.error("hint: " + ok.error().message);
		}
	}

	void stress_thread()
	{
		volatile std::uint64_t spin = 0;
		while (!done_.load(kRelaxed))
			for (int i = 0; i < 4096; ++i)
				spin = spin + 1;
	}

	void progress_thread()
	{
		while (!done_.load()) {
			std::this_thread::sleep_for(std::chrono::milliseconds(100));
			options_.progress(c_.snapshot());
		}
	}

	Context &ctx_;
	const DmaWrite dma_;
	const Options &options_;
	const Arena &arena_;
	const MutatorCaps caps_;
	std::vector<std::size_t> wide_buffers_; /* buffers a wide DMA may span */
	const std::uint64_t churn_ops_, dma_ops_;
	Clock::time_point start_, deadline_;
	Counters c_;
	std::atomic<bool> done_{false}; /* the workers are done */
	std::atomic<bool> stop_{false}; /* time is up, or the first loss (negative controls) */
	std::atomic<std::uint64_t> dma_done_{0};
	std::atomic<unsigned> dma_running_;
};

} // namespace

Result<Report> run(Context &ctx, const Options &options)
{
	DmaWrite dma = options.dma;
	if (!dma) {
		auto *hca = dynamic_cast<uring::Hca *>(&ctx.driver());
		if (!hca)
			return make_error(EINVAL, "the churn workload needs the uring driver or "
						  "options.dma");
		dma = [hca](const Registration &reg, std::uint64_t va,
			    std::span<const std::byte> bytes, std::uint64_t tag) -> Result<int> {
			if (auto ok = hca->write(reg.lkey(), va, bytes, tag); !ok)
				return std::move(ok).error();
			auto done = hca->wait(tag);
			if (!done)
				return std::move(done).error();
			return done->result;
		};
	}
	if (!options.dma_threads || !options.buffers || !options.pages_per_buffer)
		return make_error(EINVAL, "dma_threads, buffers and pages_per_buffer must be > 0");
	Arena arena;
	for (unsigned b = 0; b < options.buffers; ++b)
		if (auto ok = arena.add_buffer(options.pages_per_buffer, false); !ok)
			return std::move(ok).error();
	for (unsigned b = 0; b < options.memfd_buffers; ++b)
		if (auto ok = arena.add_memfd_buffer(options.pages_per_buffer); !ok)
			return std::move(ok).error();
	/* 2 hugepages, and as many spare for replacements and shm segments */
	if (options.hugepages && hugepages_free(4))
		for (int b = 0; b < 2; ++b)
			if (auto ok = arena.add_buffer(1, true); !ok)
				return std::move(ok).error();
	/* One registration per buffer, in one shot (the whole-area hint); a
	 * source that cannot see memfd memory refuses it (counted by gets). */
	for (const auto &b : arena.buffers())
		if (auto ok = ctx.hint(reinterpret_cast<void *>(b.base), b.len);
		    !ok && !(b.memfd >= 0 && ok.error().code == ENOTSUP))
			return std::move(ok).error();
	const MutatorCaps caps{.small_shm = options.shm && driver_pins_small_shm(ctx.driver()),
			       .huge_shm = options.shm,
			       .shm_remap = module_is_source(options.sources)};
	Report report = Threads(ctx, std::move(dma), options, arena, caps).run();
	report.refusals_allowed = !module_is_source(options.sources);
	return report;
}

cli::Options cli_options(Options &o)
{
	return {
		cli::number("ops", "operations per run", o.ops, 0, UINT64_MAX),
		{"seconds", "N", "stop after N seconds (0: when the operations are done)",
		 [&o](const char *v) -> std::optional<std::string> {
			 const auto n = cli::count(v);
			 if (!n || *n > UINT32_MAX)
				 return std::string("a number of seconds from 0 to 4294967295");
			 o.seconds = static_cast<double>(*n);
			 return std::nullopt;
		 }},
		cli::number("seed", "random seed", o.seed, 0, UINT64_MAX),
		cli::number("threads", "DMA threads", o.dma_threads, 1, UINT32_MAX),
		cli::number("stress", "CPU-burning threads beside the workload", o.stress_threads, 0,
			    UINT32_MAX),
		cli::number("buffers", "anonymous buffers in the arena", o.buffers, 1, UINT32_MAX),
		cli::number("memfd-buffers", "memfd buffers in the arena", o.memfd_buffers, 0,
			    UINT32_MAX),
		cli::number("pages", "pages per buffer", o.pages_per_buffer, 1, UINT32_MAX),
		cli::number("churn-percent", "share of operations that change memory",
			    o.churn_percent, 1, 99),
		cli::flag("stop-at-loss", "stop at the first lost write", o.stop_at_first_loss),
		cli::flag("no-hugepages", "no hugepage buffers", o.hugepages, false),
		cli::flag("no-shm", "leave SysV shm attaches out of the churn", o.shm, false),
		cli::flag("no-hinter", "no hinting thread", o.hinter, false),
	};
}

cli::Options negative_control_options(std::uint32_t &ctx_flags)
{
	const auto set = [&ctx_flags](std::uint32_t flag) {
		return [&ctx_flags, flag](const char *) -> std::optional<std::string> {
			ctx_flags |= flag;
			return std::nullopt;
		};
	};
	return {
		{"negative-control", nullptr, "no generation check: passes only if writes are lost",
		 set(MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK)},
		{"unguarded", nullptr,
		 "MRSYNC_CTX_F_TEST_UNGUARDED_PINS: passes only if writes are lost",
		 set(MRSYNC_CTX_F_TEST_UNGUARDED_PINS)},
	};
}

std::string summary(const Report &r)
{
	const auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
	char line[512];
	std::snprintf(line, sizeof(line),
		      "ops=%llu lost_writes=%llu dma_writes=%llu wide_writes=%llu refused=%llu "
		      "unmapped_gets=%llu unwatchable_gets=%llu churn=%llu hugepage_churn=%llu "
		      "shm_churn=%llu memfd_churn=%llu hints=%llu hints_refused=%llu errors=%llu "
		      "seconds=%.1f ops_per_s=%.0f",
		      u(r.ops), u(r.lost_writes), u(r.dma_writes), u(r.wide_writes), u(r.refused),
		      u(r.unmapped_gets), u(r.unwatchable_gets), u(r.churn_ops), u(r.hugepage_ops),
		      u(r.shm_ops), u(r.memfd_ops), u(r.hints), u(r.hints_refused), u(r.errors),
		      r.seconds, r.seconds > 0 ? double(r.ops) / r.seconds : 0.0);
	return line;
}

bool passed(const Report &report, bool negative)
{
	if (negative)
		return report.lost_writes > 0;
	return report.lost_writes == 0 && report.errors == 0 &&
	       (report.refusals_allowed || report.unwatchable_gets == 0);
}

int print_verdict(const char *name, Context &ctx, const Report &report, bool negative)
{
	const auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
	const auto lost = [&](LossKind k) { return u(report.lost_by[std::size_t(k)]); };
	const mrsync_stats s = ctx.stats();
	std::printf("%s%s: %s\n", name, negative ? " (negative control)" : "",
		    summary(report).c_str());
	std::printf("%s: resyncs=%llu full_resyncs=%llu entries_repinned=%llu "
		    "entries_invalidated=%llu key_changes=%llu hits=%llu misses=%llu\n",
		    name, u(s.resyncs), u(s.full_resyncs), u(s.entries_repinned),
		    u(s.entries_invalidated), u(s.key_changes), u(s.hits), u(s.misses));
	if (report.lost_writes)
		std::printf("%s: lost writes by page: anon=%llu hugepage=%llu shm=%llu "
			    "memfd=%llu\n",
			    name, lost(LossKind::anon), lost(LossKind::hugepage),
			    lost(LossKind::shm), lost(LossKind::memfd));
	if (report.errors)
		std::printf("%s: first unexpected error: %s\n", name, report.first_error.c_str());
	if (!negative && report.unwatchable_gets && !report.refusals_allowed)
		std::printf("%s: %llu lookups refused with ENOTSUP although the kernel module, "
			    "which sees every change, is a source\n",
			    name, u(report.unwatchable_gets));
	const bool pass = passed(report, negative);
	if (negative && !pass)
		std::printf("%s: the negative control lost no write: the test cannot fail\n", name);
	std::printf("%d passed, %d failed\n", pass ? 1 : 0, pass ? 0 : 1);
	return pass ? 0 : 1;
}

} // namespace mrsync::workload
