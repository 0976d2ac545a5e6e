/* SPDX-License-Identifier: MIT */
/* exact_hit_ns: the hand-written exact-match cache on the hit rows' lookups. */
#include "bench.hpp"
#include "exact_cache.hpp"
#include "loops.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

namespace {

ExactCache filled_cache(const Workload &w)
{
	ExactCache cache;
	std::uint32_t key = 1;
	for (const auto &lookups : w.lookups)
		for (const auto &a : lookups)
			cache.insert(a.addr, a.len, key++);
	return cache;
}

} // namespace

void run_exact_rows(const Options &opts, Report &report)
{
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 2);
	const ExactCache cache = filled_cache(w);
	/* Read-only, so two threads share nothing written: its scaling is the
	 * machine's own, the control for the other 2-thread rows. */
	(void)time_hit_rows(
		opts, report, w,
		[&cache, &w](const bench_access *a, std::uint64_t s, std::uint64_t n) {
			return mrsync_bench_exact_hit_loop(cache, a, w.mask, s, n);
		},
		HitRows{"exact_hit_ns", "exact_hit_2t_ns", "exact_scaling_2t",
			"std::unordered_map (addr, len) -> key, the same lookups pre-inserted (" +
				std::to_string(cache.size()) + " pairs), no lock"});
}

const char *run_only_exact(const Options &opts)
{
	if (opts.only != "exact_hit")
		return nullptr;
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 1);
	const ExactCache cache = filled_cache(w);
	std::uint64_t warm = 0;
	for (const auto &a : w.lookups[0])
		warm += *cache.find(a.addr, a.len);
	consume(warm);
	const std::uint64_t sum =
		mrsync_bench_exact_hit_loop(cache, w.lookups[0].data(), w.mask, 0, opts.iterations);
	if (sum == UINT64_MAX)
		throw std::runtime_error("exact cache lookup failed");
	consume(sum);
	return "mrsync_bench_exact_hit_loop";
}

} // namespace mrsync::bench
