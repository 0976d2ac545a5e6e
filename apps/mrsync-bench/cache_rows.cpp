/* SPDX-License-Identifier: MIT */
/* The cache-machinery rows on the null driver (a registration costs nothing):
 * hit_ns, hit_cpp_ns, hit_2t_ns, miss_fill_ns, miss_ns. */
#include <cinttypes>
#include <cstdio>
#include <string>

#include "bench.hpp"
#include "loops.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

namespace {

constexpr std::uint32_t kAccess = MRSYNC_ACCESS_ALL;
constexpr std::uint64_t kMissStride = 8192; /* one page used, one left as a gap */
constexpr std::uint64_t kMissLen = 64;

std::string kib(std::uint64_t bytes)
{
	return std::to_string(bytes >> 10) + " KiB";
}

/* The hit rows' context: every region hinted, so every lookup can hit. */
MadeContext hinted_context(const Options &opts, const Workload &w)
{
	MadeContext made = make_context(opts, "null");
	for (char *r : w.regions)
		if (auto ok = made.ctx.hint(r, w.region_bytes, kAccess); !ok)
			throw std::runtime_error("mrsync_hint: " + ok.error().message);
	return made;
}

/* Runs every lookup once outside the timed loops (first lookups of a thread
 * take the slow path once to set up its per-thread state). */
void warm_up(mrsync_ctx *ctx, const std::vector<bench_access> &lookups)
{
	for (const auto &a : lookups) {
		mrsync_reg reg;
		if (mrsync_get(ctx, a.addr, a.len, MRSYNC_ACCESS_LOCAL_WRITE, &reg) != 0)
			throw std::runtime_error(std::string("warm-up mrsync_get: ") +
						 mrsync_last_error());
		mrsync_put(ctx, &reg);
	}
}

/* 16 lookups of 64 bytes at 4 KiB steps inside the first region: a thread
 * reusing its own buffer. */
std::vector<bench_access> one_buffer(const Workload &w)
{
	std::vector<bench_access> same;
	for (std::uint64_t i = 0; i < 16; ++i)
		same.push_back({w.regions[0] + (i * 4096) % w.region_bytes, 64});
	return same;
}

} // namespace

MadeContext make_context(const Options &opts, const char *driver)
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = driver;
	p.sources = opts.sources;
	std::string fallback;
	auto ctx = mrsync::Context::create(p);
	if (!ctx && ctx.error().code == ENODEV && !opts.source_given &&
	    p.sources != MRSYNC_SOURCE_MANUAL) {
		fallback = ctx.error().message;
		p.sources = MRSYNC_SOURCE_MANUAL;
		ctx = mrsync::Context::create(p);
	}
	if (!ctx) {
		std::string why = std::string(driver) + " context: " + ctx.error().message;
		if (ctx.error().code == ENODEV)
			throw Unavailable(why);
		throw std::runtime_error(why);
	}
	const char *source = p.sources == MRSYNC_SOURCE_UFFD     ? "uffd"
			     : p.sources == MRSYNC_SOURCE_MANUAL ? "manual"
			     : p.sources == MRSYNC_SOURCE_KMOD   ? "kmod"
								 : "mixed";
	return MadeContext{std::move(ctx.value()), source, fallback};
}

void run_cache_rows(const Options &opts, Report &report)
{
	const TimingOptions t{opts.batches, opts.batch_ms};
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 2);
	const std::string shape = std::to_string(opts.regions) + " x " +
				  kib(opts.region_bytes) + " regions";
	MadeContext made = [&] {
		try {
			return hinted_context(opts, w);
		} catch (const Unavailable &e) {
			for (const char *row : {"hit_ns", "hit_cpp_ns", "hit_2t_ns", "miss_fill_ns",
						"miss_ns"})
				report.skip(row, "ns", "mrsync (null driver)", e.what());
			throw;
		}
	}();
	report.param("source", made.source);
	if (!made.fallback.empty())
		report.note("userfaultfd source unavailable, the manual source was used: " +
			    made.fallback);
	mrsync_ctx *c = made.ctx.c_handle();
	const bench_access *a0 = w.lookups[0].data();
	const std::uint64_t mask = w.mask;

	(void)time_hit_rows(
		opts, report, w,
		[c, mask](const bench_access *a, std::uint64_t s, std::uint64_t n) {
			return mrsync_bench_hit_loop(c, a, mask, s, n);
		},
		HitRows{"hit_ns", "hit_2t_ns", "scaling_2t",
			"mrsync_get + mrsync_put (C ABI), random lookups in " + shape});

	report_alone(report, "hit_cpp_ns",
		     time_each_cpu(
			     [&](std::uint64_t s, std::uint64_t n) {
				     return mrsync_bench_hit_cpp_loop(made.ctx, a0, mask, s, n);
			     },
			     t),
		     "mrsync::Context::get (RAII Registration), same lookups");
	/* A thread reusing its own buffer: lookups inside one region, through
	 * the inline entry (mrsync/mru.h). */
	const std::vector<bench_access> same = one_buffer(w);
	report_alone(report, "hit_mru_ns",
		     time_each_cpu(
			     [&](std::uint64_t s, std::uint64_t n) {
				     return mrsync_bench_hit_mru_loop(c, same.data(), same.size() - 1,
								      s, n);
			     },
			     t),
		     "mrsync_get_mru + mrsync_put_mru (inline, mrsync/mru.h), 16 lookups "
		     "inside one 64 KiB region, cycled");
	const mrsync_stats hs = made.ctx.stats();
	report.param("hit_rows_misses", std::to_string(hs.misses), true);
	if (hs.regions != opts.regions || hs.misses > opts.regions + 8)
		report.note("hit rows: expected " + std::to_string(opts.regions) +
			    " regions and only the hints as misses, got " +
			    std::to_string(hs.regions) + " regions, " + std::to_string(hs.misses) +
			    " misses");

	/* Misses: a fresh context, one fresh page per lookup. The first
	 * max_regions misses fill the cache; after that each one also evicts. */
	const std::uint64_t fill = 4096; /* mrsync's default max_regions */
	/* sample() may run up to 4x the batches asked for */
	const std::uint64_t total = fill + 4 * std::uint64_t(opts.batches) * opts.miss_batch;
	Mapping area(total * kMissStride, false); /* outlives the context */
	MadeContext miss = make_context(opts, "null");
	mrsync_ctx *mc = miss.ctx.c_handle();
	auto misses = [&](std::uint64_t first) -> Loop {
		return [&, first](std::uint64_t s, std::uint64_t n) {
			return mrsync_bench_miss_loop(mc, area.data(), kMissStride, kMissLen,
						      first + s, n);
		};
	};
	const Sample filling = time_once(misses(0), fill);
	const Sample steady = time_fixed(misses(fill), opts.miss_batch, opts.batches);
	const mrsync_stats ms = miss.ctx.stats();
	report.set("miss_fill_ns", filling,
		   "mrsync_get + mrsync_put of an uncached page, first 4096 (no eviction yet)");
	report.set("miss_ns", steady,
		   "the same past max_regions = 4096: each miss also evicts one (clock LRU)");
	report.param("miss_evictions", std::to_string(ms.evictions), true);
	report.param("miss_registrations", std::to_string(ms.registrations), true);
}

const char *run_only_cache(const Options &opts)
{
	if (opts.only == "miss") {
		/* past 4096 misses, each one also evicts */
		/* the area outlives the context: unwatching needs it mapped */
		Mapping area(opts.iterations * kMissStride, false);
		MadeContext made = make_context(opts, "null");
		const std::uint64_t sum = mrsync_bench_miss_loop(made.ctx.c_handle(), area.data(),
								 kMissStride, kMissLen, 0,
								 opts.iterations);
		if (sum == UINT64_MAX)
			throw std::runtime_error(std::string("mrsync_get failed: ") +
						 mrsync_last_error());
		const mrsync_stats s = made.ctx.stats();
		std::fprintf(stderr, "source %s: %" PRIu64 " misses, %" PRIu64 " evictions\n",
			     made.source.c_str(), s.misses, s.evictions);
		return "mrsync_bench_miss_loop";
	}
	const bool cpp = opts.only == "hit_cpp", mru = opts.only == "hit_mru";
	if (opts.only != "hit" && !cpp && !mru)
		return nullptr;
	const Workload w = make_workload(opts.regions, opts.region_bytes, opts.accesses,
					 opts.max_len, 1);
	MadeContext made = hinted_context(opts, w);
	warm_up(made.ctx.c_handle(), w.lookups[0]);
	std::uint64_t sum;
	const std::vector<bench_access> same = one_buffer(w);
	if (mru)
		sum = mrsync_bench_hit_mru_loop(made.ctx.c_handle(), same.data(), same.size() - 1, 0,
						opts.iterations);
	else if (cpp)
		sum = mrsync_bench_hit_cpp_loop(made.ctx, w.lookups[0].data(), w.mask, 0,
						opts.iterations);
	else
		sum = mrsync_bench_hit_loop(made.ctx.c_handle(), w.lookups[0].data(), w.mask, 0,
					    opts.iterations);
	if (sum == UINT64_MAX)
		throw std::runtime_error(std::string("mrsync_get failed: ") + mrsync_last_error());
	consume(sum);
	const mrsync_stats s = made.ctx.stats();
	std::fprintf(stderr, "source %s: %" PRIu64 " hits, %" PRIu64 " misses (%u hints)\n",
		     made.source.c_str(), s.hits, s.misses, opts.regions);
	return mru ? "mrsync_bench_hit_mru_loop"
	       : cpp ? "mrsync_bench_hit_cpp_loop"
		     : "mrsync_bench_hit_loop";
}

} // namespace mrsync::bench
