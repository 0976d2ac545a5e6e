/* SPDX-License-Identifier: MIT */
#include "churn_workload.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <mrsync/uring.hpp>

#include "cli.hpp"

namespace mrsync::workload {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kHugePage = 2ull << 20;

struct Page {
	std::uint64_t addr = 0;
	std::uint64_t size = 0;
	bool huge = false;
	bool mapped = true; /* guarded by lock */
	std::mutex lock;
};

/* Counters shared by the threads; the report is a snapshot of them. */
struct Counters {
	std::atomic<std::uint64_t> ops{0}, dma_writes{0}, lost{0}, refused{0}, unmapped_gets{0};
	std::atomic<std::uint64_t> churn{0}, huge_churn{0}, errors{0};
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
		r.lost_writes = lost.load();
		r.refused = refused.load();
		r.unmapped_gets = unmapped_gets.load();
		r.churn_ops = churn.load();
		r.hugepage_ops = huge_churn.load();
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

bool hugepages_free(unsigned wanted)
{
	std::ifstream meminfo("/proc/meminfo");
	std::string line;
	while (std::getline(meminfo, line))
		if (line.rfind("HugePages_Free:", 0) == 0)
			return std::stoul(line.substr(15)) >= wanted;
	return false;
}

/* The workload's memory: buffers carved into pages, each with its lock. */
class Arena {
public:
	~Arena()
	{
		for (auto &p : pages_) /* mapped, or a PROT_NONE guard */
			munmap(reinterpret_cast<void *>(p->addr), p->size);
	}

	Status add_buffer(unsigned pages, bool huge)
	{
		const std::uint64_t unit = huge ? kHugePage : kPage;
		void *base = fresh_mapping(0, pages * unit, huge);
		if (base == MAP_FAILED)
			return make_error(errno, std::string("mmap of a buffer failed: ") +
							 std::strerror(errno));
		std::memset(base, 0, pages * unit);
		buffers_.push_back({reinterpret_cast<std::uint64_t>(base), pages * unit});
		for (unsigned i = 0; i < pages; ++i) {
			auto p = std::make_unique<Page>();
			p->addr = reinterpret_cast<std::uint64_t>(base) + i * unit;
			p->size = unit;
			p->huge = huge;
			pages_.push_back(std::move(p));
		}
		return {};
	}

	std::span<std::unique_ptr<Page>> pages() { return pages_; }
	const std::vector<std::pair<std::uint64_t, std::uint64_t>> &buffers() const { return buffers_; }

private:
	std::vector<std::unique_ptr<Page>> pages_;
	std::vector<std::pair<std::uint64_t, std::uint64_t>> buffers_;
};

/* One DMA write of random bytes into a random part of a page, checked. */
void dma_once(Context &ctx, const DmaWrite &dma, Page &page, std::mt19937_64 &rng,
	      std::uint64_t user_data, Counters &c)
{
	std::lock_guard guard(page.lock);
	const std::uint64_t len = 8 + rng() % 248;
	const std::uint64_t off = rng() % (page.size - len);
	std::byte pattern[256];
	for (std::uint64_t i = 0; i < len; ++i)
		pattern[i] = std::byte(rng() | 1); /* never zero: a fresh page reads zero */
	const std::uint64_t va = page.addr + off;

	auto reg = ctx.get(reinterpret_cast<void *>(va), len);
	if (!reg) {
		if (reg.error().code == EFAULT && !page.mapped)
			c.unmapped_gets.fetch_add(1);
		else
			c.error("get: " + reg.error().message);
		return;
	}
	auto done = dma(*reg, va, std::span<const std::byte>(pattern, len), user_data);
	if (!done) {
		c.error("dma: " + done.error().message);
		return;
	}
	if (*done < 0) {
		c.refused.fetch_add(1);
		return;
	}
	c.dma_writes.fetch_add(1);
	/* Silent loss: the device wrote somewhere the application cannot see. */
	if (!page.mapped || std::memcmp(reinterpret_cast<void *>(va), pattern, len) != 0)
		c.lost.fetch_add(1);
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

/* One change of the mapping under a page, the kind picked at random. */
void churn_once(Page &page, Scratch &scratch, std::mt19937_64 &rng, Counters &c)
{
	std::lock_guard guard(page.lock);
	auto *addr = reinterpret_cast<void *>(page.addr);
	const auto fail = [&](const char *what) {
		c.error(std::string(what) + ": " + std::strerror(errno));
	};
	if (!page.mapped) {
		if (fresh_mapping(page.addr, page.size, page.huge) == MAP_FAILED)
			return fail("mmap back");
		page.mapped = true;
	} else {
		switch (rng() % 5) {
		case 0: /* a fresh page at the same address */
			if (fresh_mapping(page.addr, page.size, page.huge) == MAP_FAILED)
				return fail("mmap MAP_FIXED");
			break;
		case 1: /* gone; lookups must fail until it comes back */
			if (!unmap_and_guard(page))
				return fail("munmap");
			page.mapped = false;
			break;
		case 2: /* the next touch gets a new zero page */
			if (madvise(addr, page.size, MADV_DONTNEED) != 0)
				return fail("madvise");
			break;
		case 3: /* the page moves away; a fresh one takes its place */
		case 4: /* away and back: the same physical page returns */
			if (page.huge) { /* hugetlb mremap is not what we test: remap */
				if (fresh_mapping(page.addr, page.size, true) == MAP_FAILED)
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
			} else if (fresh_mapping(page.addr, page.size, false) == MAP_FAILED) {
				return fail("mmap after mremap");
			}
			scratch.reset(page.size);
			break;
		}
	}
	c.churn.fetch_add(1);
	if (page.huge)
		c.huge_churn.fetch_add(1);
}

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
	if (options.hugepages && hugepages_free(4))
		if (auto ok = arena.add_buffer(2, true); !ok)
			return std::move(ok).error();
	/* One registration per buffer, in one shot (the whole-area hint). */
	for (const auto &[base, len] : arena.buffers())
		if (auto ok = ctx.hint(reinterpret_cast<void *>(base), len); !ok)
			return std::move(ok).error();

	Counters c;
	const auto pages = arena.pages();
	const std::uint64_t churn_ops = options.ops * options.churn_percent / 100;
	const std::uint64_t dma_ops = options.ops - churn_ops;
	const auto start = std::chrono::steady_clock::now();
	std::atomic<bool> done{false};

	std::vector<std::thread> threads;
	for (unsigned t = 0; t < options.dma_threads; ++t)
		threads.emplace_back([&, t] {
			std::mt19937_64 rng(options.seed * 1000 + t);
			const std::uint64_t mine = dma_ops / options.dma_threads +
						   (t < dma_ops % options.dma_threads);
			for (std::uint64_t i = 0; i < mine; ++i) {
				dma_once(ctx, dma, *pages[rng() % pages.size()], rng,
					 (std::uint64_t(t + 1) << 48) | i, c);
				c.ops.fetch_add(1, std::memory_order_relaxed);
			}
		});
	threads.emplace_back([&] {
		std::mt19937_64 rng(options.seed * 1000 + 999);
		Scratch scratch;
		if (!scratch)
			c.error("cannot reserve the scratch area");
		for (std::uint64_t i = 0; scratch && i < churn_ops; ++i) {
			churn_once(*pages[rng() % pages.size()], scratch, rng, c);
			c.ops.fetch_add(1, std::memory_order_relaxed);
		}
	});
	std::thread reporter;
	if (options.progress)
		reporter = std::thread([&] {
			while (!done.load()) {
				std::this_thread::sleep_for(std::chrono::milliseconds(100));
				options.progress(c.snapshot());
			}
		});
	for (auto &t : threads)
		t.join();
	done.store(true);
	if (reporter.joinable())
		reporter.join();

	Report report = c.snapshot();
	report.first_error = c.first_error;
	report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
	return report;
}

bool parse_option(int argc, char **argv, int &i, Options &options)
{
	if (auto v = cli::option(argc, argv, i, "--ops"); v && cli::count(*v)) {
		options.ops = *cli::count(*v);
		return true;
	}
	if (auto t = cli::option(argc, argv, i, "--threads"); t && cli::count(*t) && *cli::count(*t)) {
		options.dma_threads = static_cast<unsigned>(*cli::count(*t));
		return true;
	}
	return false;
}

std::string summary(const Report &r)
{
	char line[256];
	std::snprintf(line, sizeof(line),
		      "ops=%llu lost_writes=%llu dma_writes=%llu refused=%llu unmapped_gets=%llu "
		      "churn=%llu hugepage_churn=%llu errors=%llu",
		      (unsigned long long)r.ops, (unsigned long long)r.lost_writes,
		      (unsigned long long)r.dma_writes, (unsigned long long)r.refused,
		      (unsigned long long)r.unmapped_gets, (unsigned long long)r.churn_ops,
		      (unsigned long long)r.hugepage_ops, (unsigned long long)r.errors);
	return line;
}

} // namespace mrsync::workload

namespace mrsync::workload {

int print_verdict(const char *name, Context &ctx, const Report &report, bool negative)
{
	const mrsync_stats s = ctx.stats();
	std::printf("%s%s: %s\n", name, negative ? " (negative control)" : "",
		    summary(report).c_str());
	std::printf("%s: resyncs=%llu full_resyncs=%llu entries_repinned=%llu "
		    "entries_invalidated=%llu key_changes=%llu hits=%llu misses=%llu seconds=%.1f\n",
		    name, (unsigned long long)s.resyncs, (unsigned long long)s.full_resyncs,
		    (unsigned long long)s.entries_repinned, (unsigned long long)s.entries_invalidated,
		    (unsigned long long)s.key_changes, (unsigned long long)s.hits,
		    (unsigned long long)s.misses, report.seconds);
	if (report.errors)
		std::printf("%s: first unexpected error: %s\n", name, report.first_error.c_str());
	const bool pass = negative ? report.lost_writes > 0
				   : report.lost_writes == 0 && report.errors == 0;
	if (negative && !pass)
		std::printf("%s: the negative control lost no write: the test cannot fail\n", name);
	std::printf("%d passed, %d failed\n", pass ? 1 : 0, pass ? 0 : 1);
	return pass ? 0 : 1;
}

} // namespace mrsync::workload
