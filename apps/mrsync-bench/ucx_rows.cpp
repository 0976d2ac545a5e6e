/* SPDX-License-Identifier: MIT */
/* The UCX peer rows: ucx_hit_ns, ucx_hit_2t_ns, ucx_miss_ns, on the hit rows'
 * regions and lookups. Without ucx-ucs they are skipped and print null. */
#include <cstdio>
#include <string>

#include "bench.hpp"
#include "timing.hpp"
#include "workload.hpp"

#ifdef MRSYNC_BENCH_HAVE_UCX
#include "ucx_peer.h"
#endif

namespace mrsync::bench {

namespace {

constexpr const char *kRows[] = {"ucx_hit_ns", "ucx_hit_2t_ns", "ucx_scaling_2t", "ucx_miss_ns",
				 "ucx_miss_evict_ns"};
constexpr const char *kUnits[] = {"ns", "ns", "x", "ns", "ns"};

void skip_all(Report &report, const std::string &why)
{
	for (std::size_t i = 0; i < std::size(kRows); ++i)
		report.skip(kRows[i], kUnits[i], "UCX 1.13 ucs_rcache", why);
}

#ifdef MRSYNC_BENCH_HAVE_UCX
constexpr std::uint64_t kMissStride = 8192;
constexpr std::uint64_t kMissLen = 64;

/* Owns the peer. */
struct Peer {
	ucx_peer *p = nullptr;
	int events = 0;
	std::string why_no_events;
	explicit Peer(bool allow_no_events, unsigned long max_regions = 0)
	{
		char err[256] = "";
		if (ucx_peer_create(&p, allow_no_events, max_regions, &events, err, sizeof(err)) !=
		    0)
			throw Unavailable(err);
		if (!events)
			why_no_events = err;
	}
	~Peer() { ucx_peer_destroy(p); }
	Peer(const Peer &) = delete;
	Peer &operator=(const Peer &) = delete;
};

/* The same fill as mrsync's miss rows (4096 misses), then the timed
 * batches of fresh pages of `area`. */
Sample time_misses(const Options &opts, const Peer &peer, const Mapping &area)
{
	auto misses = [&](std::uint64_t first) -> Loop {
		return [&, first](std::uint64_t s, std::uint64_t n) {
			return mrsync_bench_ucx_miss_loop(peer.p, area.data(), kMissStride, kMissLen,
							  first + s, n);
		};
	};
	(void)time_once(misses(0), 4096);
	return time_fixed(misses(4096), opts.miss_batch, opts.batches);
}

void add_regions(const Peer &peer, const Workload &w)
{
	for (char *r : w.regions)
		if (ucx_peer_add(peer.p, r, w.region_bytes) != 0)
			throw std::runtime_error("ucs_rcache_get failed while caching the regions");
}
#endif

} // namespace

bool have_ucx()
{
#ifdef MRSYNC_BENCH_HAVE_UCX
	return true;
#else
	return false;
#endif
}

void run_ucx_rows(const Options &opts, Report &report)
{
#ifndef MRSYNC_BENCH_HAVE_UCX
	(void)opts;
	skip_all(report, "ucx-ucs not found");
#else
	report.param("ucx", ucx_peer_version());
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 2);
	/* Declared before the peer, so the rcache is gone when it is unmapped. */
	const std::uint64_t total = 4096 + 4 * std::uint64_t(opts.batches) * opts.miss_batch;
	Mapping area(total * kMissStride, false);
	try {
		Peer peer(false); /* timed rows: the real configuration or nothing */
		add_regions(peer, w);
		const std::uint64_t cached = ucx_peer_registrations(peer.p);
		ucx_peer *p = peer.p;
		(void)time_hit_rows(
			opts, report, w,
			[p, &w](const bench_access *a, std::uint64_t s, std::uint64_t n) {
				return mrsync_bench_ucx_hit_loop(p, a, w.mask, s, n);
			},
			HitRows{"ucx_hit_ns", "ucx_hit_2t_ns", "ucx_scaling_2t",
				"ucs_rcache_get + ucs_rcache_region_put, dummy registration, "
				"same lookups"});
		if (ucx_peer_registrations(peer.p) != cached)
			report.note("UCX hit rows registered " +
				    std::to_string(ucx_peer_registrations(peer.p) - cached) +
				    " regions: some lookups missed");

		report.set("ucx_miss_ns", time_misses(opts, peer, area),
			   "ucs_rcache_get + put of an uncached page (UCX never evicts here: "
			   "no max_regions)");
	} catch (const Unavailable &e) {
		skip_all(report, e.what());
		return;
	}
	try {
		/* miss_ns's peer: the same cap as mrsync's default max_regions, so
		 * past the fill each miss evicts one region in both caches. */
		Peer capped(false, 4096);
		report.set("ucx_miss_evict_ns", time_misses(opts, capped, area),
			   "as ucx_miss_ns with max_regions = 4096 (mrsync's default): each miss "
			   "past the fill also evicts one");
	} catch (const Unavailable &e) {
		skip_all(report, e.what());
	}
#endif
}

const char *run_only_ucx(const Options &opts)
{
	if (opts.only != "ucx_hit")
		return nullptr;
#ifndef MRSYNC_BENCH_HAVE_UCX
	throw Unavailable("ucx-ucs not found: this mrsync-bench has no UCX peer");
#else
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 1);
	Peer peer(true); /* valgrind: UCM cannot hook, the hit path is the same */
	if (!peer.events)
		std::fprintf(stderr, "note: %s\n", peer.why_no_events.c_str());
	add_regions(peer, w);
	for (const auto &a : w.lookups[0])
		if (ucx_peer_add(peer.p, a.addr, a.len) != 0)
			throw std::runtime_error("ucs_rcache_get failed in the warm-up");
	const std::uint64_t sum =
		mrsync_bench_ucx_hit_loop(peer.p, w.lookups[0].data(), w.mask, 0, opts.iterations);
	if (sum == UINT64_MAX)
		throw std::runtime_error("ucs_rcache_get failed");
	consume(sum);
	return "mrsync_bench_ucx_hit_loop";
#endif
}

} // namespace mrsync::bench
