/* SPDX-License-Identifier: MIT */
/* The shape every hit-like row shares (control, mrsync, exact, UCX): one
 * thread alone on each CPU, then two threads at once, and their scaling. */
#include <cstdio>
#include <string>

#include "bench.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

void report_alone(Report &report, const std::string &name, const PerCpu &each,
		  const std::string &what)
{
	report.set(name, each.fastest(),
		   what + (each.cpus > 1 ? ", 1 thread, the faster CPU" : ", 1 thread"));
	for (int cpu = 0; cpu < each.cpus; ++cpu) {
		char ns[32];
		std::snprintf(ns, sizeof(ns), "%.3f", each.on[cpu].median_ns);
		report.param(name + "_cpu" + std::to_string(cpu), ns, true);
	}
	const double a = each.on[0].median_ns, b = each.on[each.cpus - 1].median_ns;
	if (a > 1.2 * b || b > 1.2 * a) {
		char text[160];
		std::snprintf(text, sizeof(text),
			      "%s: the two CPUs differ in speed (%.1f vs %.1f ns alone)",
			      name.c_str(), a, b);
		report.note(text);
	}
}

double time_hit_rows(const Options &opts, Report &report, const Workload &w,
		     const std::function<std::uint64_t(const bench_access *, std::uint64_t,
						       std::uint64_t)> &loop_on,
		     const HitRows &rows)
{
	const TimingOptions t{opts.batches, opts.batch_ms};
	auto loop = [&](const bench_access *a) -> Loop {
		return [&loop_on, a](std::uint64_t s, std::uint64_t n) { return loop_on(a, s, n); };
	};
	const PerCpu alone = time_each_cpu(loop(w.lookups[0].data()), t);
	report_alone(report, rows.one, alone, rows.what);
	if (alone.cpus < 2) {
		report.skip(rows.two, "ns", "2 threads", "only one CPU is allowed");
		report.skip(rows.scaling, "x", "2 threads", "only one CPU is allowed");
		return alone.fastest().median_ns;
	}
	const Sample two =
		time_two_threads(loop(w.lookups[0].data()), loop(w.lookups[1].data()), t);
	report.set(rows.two, two,
		   std::string("as ") + rows.one + ", 2 threads at once, per operation per thread");
	/* Throughput together over the mean throughput of one thread alone,
	 * each CPU measured against itself. */
	const double one = (1 / alone.on[0].median_ns + 1 / alone.on[1].median_ns) / 2;
	report.set(rows.scaling, (1 / two.thread_ns[0] + 1 / two.thread_ns[1]) / one, "x",
		   "throughput of 2 threads over 1 thread (each CPU against itself alone)");
	return alone.fastest().median_ns;
}

} // namespace mrsync::bench
