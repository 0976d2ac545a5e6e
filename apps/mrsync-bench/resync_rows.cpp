/* SPDX-License-Identifier: MIT */
/* resync_1page_1g_ns vs rereg_1g_ns on the uring driver (real pins): a
 * populated 1 GiB anonymous mapping registered in one shot; one fresh 4 KiB
 * page mmap(MAP_FIXED)ed inside it, then the next mrsync_get of that page
 * drains the event, pins the page, maps, fences and unpins -- versus
 * registering the whole 1 GiB again on a fresh context. */
#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <system_error>

#include "bench.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kAccess = MRSYNC_ACCESS_ALL;

void skip_all(Report &report, const std::string &why)
{
	report.skip("resync_1page_1g_ns", "ns", "uring: resync of 1 page in 1 GiB", why);
	report.skip("rereg_1g_ns", "ns", "uring: registering 1 GiB again", why);
	report.skip("rereg_over_resync", "x", "rereg_1g_ns / resync_1page_1g_ns", why);
}

void hint_or_throw(mrsync::Context &ctx, const void *addr, std::uint64_t len)
{
	if (auto ok = ctx.hint(addr, len, kAccess); !ok)
		throw std::runtime_error("uring: mrsync_hint of 1 GiB: " + ok.error().message);
}

/* Registers the whole mapping on a fresh context, `samples` times. A
 * registration during which the thread lost its CPU counts its CPU time
 * (pinning is CPU work in the kernel); `disturbed` counts those. */
std::vector<double> time_rereg(const Options &opts, const Mapping &big, int samples,
			       int &disturbed)
{
	std::vector<double> ns;
	for (int i = 0; i < samples; ++i) {
		MadeContext fresh = make_context(opts, "uring");
		const std::uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
		hint_or_throw(fresh.ctx, big.data(), big.size());
		const std::uint64_t t1 = now_ns(), c1 = thread_cpu_ns();
		const bool lost = was_disturbed(t1 - t0, c1 - c0);
		disturbed += lost;
		ns.push_back(double(lost ? c1 - c0 : t1 - t0));
		/* destroying the context unpins the GiB, untimed */
	}
	return ns;
}

} // namespace

void replace_pages(MadeContext &made, std::span<char *const> pages)
{
	for (char *p : pages) {
		if (mmap(p, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED)
			throw std::system_error(errno, std::generic_category(), "mmap(MAP_FIXED)");
		if (made.source == "manual")
			if (auto ok = made.ctx.notify_unmap(p, kPage); !ok)
				throw std::runtime_error("mrsync_notify_unmap: " + ok.error().message);
	}
	if (made.source != "manual") {
		/* The unmapping thread resumes once the monitor has read the
		 * event; give the monitor time to publish it (untimed). */
		const timespec ms{0, 1'000'000};
		nanosleep(&ms, nullptr);
	}
}

namespace {

/* What the resync samples of one source gave. */
struct ResyncTiming {
	std::string source;
	double median_ns = 0;
	int samples = 0, discarded = 0, disturbed = 0;
	mrsync_stats last{};
};

/* Registers `big` in one shot on a fresh uring context of `opts`' source,
 * then times `samples` lookups, each of a page just replaced: the drain,
 * the pin of one page, the map and the fence. Only lookups that did exactly
 * one resync of one entry count. */
ResyncTiming time_resyncs(const Options &opts, const Mapping &big, int samples,
			  std::uint64_t seed, Report &report)
{
	MadeContext made = make_context(opts, "uring");
	mrsync::Context &ctx = made.ctx;
	hint_or_throw(ctx, big.data(), big.size());
	if (const mrsync_stats first = ctx.stats(); first.registrations != 1)
		report.note("resync: the 1 GiB hint made " + std::to_string(first.registrations) +
			    " registrations, expected 1");

	const std::uint64_t pages = big.size() / kPage;
	std::mt19937_64 rng(seed);
	std::uniform_int_distribution<std::uint64_t> pick(0, pages - 1);
	std::set<std::uint64_t> used;
	std::vector<double> ns;
	ResyncTiming out{made.source};
	for (int s = 0; s < samples; ++s) {
		std::uint64_t page;
		do
			page = pick(rng);
		while (!used.insert(page).second);
		char *p = big.data() + page * kPage;
		replace_pages(made, {&p, 1});
		const mrsync_stats before = ctx.stats();
		std::string failed;
		const std::uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
		{
			auto reg = ctx.get(p, kPage, kAccess);
			if (!reg) [[unlikely]]
				failed = reg.error().message;
		} /* put */
		const std::uint64_t t1 = now_ns(), c1 = thread_cpu_ns();
		/* wall time is kept: the fence may legitimately wait */
		out.disturbed += was_disturbed(t1 - t0, c1 - c0);
		if (!failed.empty())
			throw std::runtime_error("uring: mrsync_get after the remap: " + failed);
		const mrsync_stats after = ctx.stats();
		if (after.resyncs == before.resyncs + 1 &&
		    after.entries_repinned == before.entries_repinned + 1)
			ns.push_back(double(t1 - t0));
		else
			++out.discarded;
	}
	out.last = ctx.stats();
	out.samples = int(ns.size());
	if (!ns.empty())
		out.median_ns = median(ns);
	return out;
}

} // namespace

void run_resync_rows(const Options &opts, Report &report)
{
	try {
		(void)make_context(opts, "uring"); /* probe: skip cleanly when unavailable */
	} catch (const Unavailable &e) {
		skip_all(report, e.what());
		return;
	}
	Mapping big(opts.resync_bytes, true);

	/* Re-registration first: a GiB can only be watched by one userfaultfd
	 * at a time, so the contexts must not overlap. */
	CpuPin pin(0);
	int rereg_disturbed = 0;
	const double rereg = median(time_rereg(opts, big, opts.rereg_samples, rereg_disturbed));

	const ResyncTiming main = time_resyncs(opts, big, opts.resync_samples, 0x7265737963ull,
					       report);
	if (main.samples == 0) {
		skip_all(report, "no lookup after a remap took the resync path (events not seen)");
		return;
	}
	report.set("resync_1page_1g_ns", main.median_ns, "ns",
		   "uring: mrsync_get after mmap(MAP_FIXED) of 1 page in a 1 GiB registration "
		   "(drain, pin 1 page, map, fence)");
	report.set("rereg_1g_ns", rereg, "ns",
		   "uring: registering the 1 GiB again (fresh context's mrsync_hint: pin + create)");
	report.set("rereg_over_resync", rereg / main.median_ns, "x",
		   "rereg_1g_ns / resync_1page_1g_ns");
	/* The same with the application (or DPDK's memory events) reporting
	 * the change: what the resync itself costs once no watch has to be
	 * re-armed on the new page -- the bound of the other sources. */
	if (main.source != "manual") {
		Options manual = opts;
		manual.sources = MRSYNC_SOURCE_MANUAL;
		const ResyncTiming m =
			time_resyncs(manual, big, opts.resync_samples, 0x6d616e75616cull, report);
		if (m.samples) {
			report.set("resync_1page_1g_manual_ns", m.median_ns, "ns",
				   "the same, changes reported by the application (manual source: no "
				   "re-arm)");
			report.set("rereg_over_resync_manual", rereg / m.median_ns, "x",
				   "rereg_1g_ns / resync_1page_1g_manual_ns");
		}
	}
	report.param("resync_source", main.source);
	report.param("resync_samples", std::to_string(main.samples), true);
	report.param("resync_discarded", std::to_string(main.discarded), true);
	report.param("rereg_samples", std::to_string(opts.rereg_samples), true);
	report.param("resync_disturbed", std::to_string(main.disturbed), true);
	report.param("rereg_disturbed", std::to_string(rereg_disturbed), true);
	report.param("resync_key_changes", std::to_string(main.last.key_changes), true);
	report.param("resync_stale_pinned_bytes", std::to_string(main.last.stale_pinned_bytes),
		     true);
}

} // namespace mrsync::bench
