/* SPDX-License-Identifier: MIT */
/* --rows scaling: what a resync costs as a function of what changed and of
 * the registration's size, on the uring driver (real pins). For each size
 * (16 MiB, 256 MiB, 1 GiB, 4 GiB; one populated anonymous mapping
 * registered in one shot) and each count of changed pages (1, 16, 256): the
 * pages are mmap(MAP_FIXED)ed fresh (untimed), then timed: mrsync_resync()
 * (drain, invalidate, fence, unpin) and one mrsync_get + put of each changed
 * page (pin, map). Row resync_<pages>p_<size>_ns, the median of the samples;
 * the resync() part alone is the param <row>_invalidate. Flat along a row of
 * the table and linear down a column is what "proportional to the change"
 * means. */
#include <sys/mman.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>

#include "bench.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kSizes[] = {16 * kMiB, 256 * kMiB, 1024 * kMiB, 4096 * kMiB};
constexpr std::uint32_t kPages[] = {1, 16, 256};

std::string size_name(std::uint64_t bytes)
{
	return bytes >= 1024 * kMiB ? std::to_string(bytes / (1024 * kMiB)) + "g"
				    : std::to_string(bytes / kMiB) + "m";
}

struct Timed {
	double total_ns, invalidate_ns;
	double cpu_ns; /* the thread's CPU time: without the time other processes took */
};

/* One sample: `count` fresh pages not changed before, replaced, then timed. */
Timed one_sample(MadeContext &made, const Mapping &big, std::uint32_t count, std::mt19937_64 &rng,
		 std::set<std::uint64_t> &used)
{
	const std::vector<char *> pages = fresh_pages(big, count, rng, used);
	replace_pages(made, pages);
	mrsync_ctx *c = made.ctx.c_handle();
	const std::uint64_t c0 = thread_cpu_ns();
	const std::uint64_t t0 = now_ns();
	if (mrsync_resync(c) != 0)
		throw std::runtime_error(std::string("mrsync_resync: ") + mrsync_last_error());
	const std::uint64_t t1 = now_ns();
	for (char *p : pages) {
		mrsync_reg reg;
		if (mrsync_get(c, p, kPage, MRSYNC_ACCESS_ALL, &reg) != 0)
			throw std::runtime_error(std::string("mrsync_get after the remap: ") +
						 mrsync_last_error());
		mrsync_put(c, &reg);
	}
	const std::uint64_t t2 = now_ns();
	return {double(t2 - t0), double(t1 - t0), double(thread_cpu_ns() - c0)};
}

} // namespace

void run_scaling_rows(const Options &opts, Report &report)
{
	const int samples = opts.quick ? 3 : 7;
	CpuPin pin(0);
	for (const std::uint64_t size : kSizes) {
		const std::string sz = size_name(size);
		MadeContext made = make_context(opts, "uring");
		Mapping big(size, true);
		if (auto ok = made.ctx.hint(big.data(), big.size(), MRSYNC_ACCESS_ALL); !ok) {
			for (const std::uint32_t n : kPages)
				report.skip("resync_" + std::to_string(n) + "p_" + sz + "_ns", "ns",
					    "uring resync", "mrsync_hint: " + ok.error().message);
			continue;
		}
		std::mt19937_64 rng(0x7363616c65ull + size);
		std::set<std::uint64_t> used;
		for (const std::uint32_t n : kPages) {
			const mrsync_stats before = made.ctx.stats();
			std::vector<double> total, invalidate, cpu;
			for (int s = 0; s < samples; ++s) {
				const Timed t = one_sample(made, big, n, rng, used);
				total.push_back(t.total_ns);
				invalidate.push_back(t.invalidate_ns);
				cpu.push_back(t.cpu_ns);
			}
			const mrsync_stats after = made.ctx.stats();
			const std::string row = "resync_" + std::to_string(n) + "p_" + sz + "_ns";
			report.set(row, median(total), "ns",
				   "uring: " + std::to_string(n) + " changed pages of a " + sz +
					   " registration: mrsync_resync + a get of each page");
			report.param(row + "_invalidate", std::to_string(median(invalidate)), true);
			report.param(row + "_cpu", std::to_string(median(cpu)), true);
			if (after.entries_repinned - before.entries_repinned !=
			    std::uint64_t(n) * samples)
				report.note(row + ": " +
					    std::to_string(after.entries_repinned -
							   before.entries_repinned) +
					    " entries re-pinned, expected " +
					    std::to_string(std::uint64_t(n) * samples));
		}
		report.param("scaling_" + sz + "_key_changes",
			     std::to_string(made.ctx.stats().key_changes), true);
	}
	report.param("scaling_samples", std::to_string(samples), true);
	report.param("scaling_source", make_context(opts, "null").source);
}

} // namespace mrsync::bench
