/* SPDX-License-Identifier: MIT */
/* mrsync-bench: mrsync's registration cache against its peers, side by side
 * in one run (see docs/benchmarks.md). */
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include "bench.hpp"
#include "../common/cli_source.hpp"
#include "bench_version.h"
#include "timing.hpp"

#ifndef MRSYNC_BENCH_BUILDTYPE
#define MRSYNC_BENCH_BUILDTYPE "unknown"
#endif

namespace mrsync::bench {

namespace {

const char kFooter[] =
	"--rows takes control,mrsync,exact,resync,ucx (default all) and scaling (only when\n"
	"asked: the resync table, 16 MiB .. 4 GiB pinned) and breakdown (only when\n"
	"asked: a resync's time by driver call); --quick shortens the\n"
	"batches unless they are given. Instructions per lookup (no hardware counters):\n"
	"  valgrind --tool=callgrind --toggle-collect=mrsync_bench_hit_loop \\\n"
	"      mrsync-bench --only hit --iterations 1000000   # then Ir / 1000000\n";

[[noreturn]] void usage_error(const std::string &what)
{
	std::fprintf(stderr, "mrsync-bench: %s (mrsync-bench --help)\n", what.c_str());
	std::exit(2);
}

/* A count >= 1, and what --quick sets it to unless it is given (0: leave it). */
template <typename T>
cli::Option number(const char *name, const char *help, T &out, int quick,
		   std::vector<std::function<void()>> &quick_defaults)
{
	auto given = std::make_shared<bool>(false);
	cli::Option o = cli::number(name, help, out, 1, INT32_MAX);
	o.set = [set = o.set, given](const char *v) {
		*given = true;
		return set(v);
	};
	if (quick)
		quick_defaults.push_back([&out, quick, given] {
			if (!*given)
				out = T(quick);
		});
	return o;
}

int parse(int argc, char **argv, Options &o)
{
	std::vector<std::function<void()>> quick;
	const cli::Options opts{
		cli::flag("json", "print one JSON object instead of a table", o.json),
		cli::flag("quick", "short run for CI (fewer and shorter batches)", o.quick),
		number("batches", "timed batches per row, the median is reported (11)", o.batches,
		       5, quick),
		number("batch-ms", "target length of one batch in ms (10)", o.batch_ms, 4, quick),
		{"rows", "LIST", "groups to run, comma-separated (all)",
		 [&o](const char *v) -> std::optional<std::string> {
			 o.groups.clear();
			 std::stringstream list(v);
			 for (std::string g; std::getline(list, g, ',');) {
				 if (g != "control" && g != "mrsync" && g != "exact" &&
				     g != "resync" && g != "ucx" && g != "scaling" && g != "breakdown")
					 return "groups among control,mrsync,exact,resync,ucx,scaling,"
						"breakdown, "
						"not '" + g + "'";
				 o.groups.push_back(g);
			 }
			 return o.groups.empty() ? std::optional<std::string>("at least one group")
						 : std::nullopt;
		 }},
		{"source", "S",
		 "event source of the mrsync contexts: uffd, kmod or manual (default uffd, "
		 "falling back to manual)",
		 [&o](const char *v) -> std::optional<std::string> {
			 const auto mask = cli::source_mask(v);
			 if (!mask || !*mask)
				 return std::string("uffd, kmod or manual");
			 o.sources = *mask;
			 o.source_given = true;
			 return std::nullopt;
		 }},
		number("resync-samples", "remapped pages timed in the resync row (41)",
		       o.resync_samples, 11, quick),
		number("rereg-samples", "1 GiB re-registrations timed (5)", o.rereg_samples, 2,
		       quick),
		{"only", "ROW", "run one loop for callgrind: hit, hit_mru, hit_cpp, exact_hit, ucx_hit, miss, "
		 "resync_1p, resync_16p, resync_256p",
		 [&o](const char *v) -> std::optional<std::string> {
			 o.only = v;
			 return std::nullopt;
		 }},
		number("iterations", "iterations of that loop (1000000)", o.iterations, 0, quick),
	};
	if (auto rc = cli::parse({"mrsync-bench", "[--json] [--quick] [options]", kFooter}, opts,
				 argc, argv))
		return *rc;
	if (o.quick)
		for (const auto &set_default : quick)
			set_default();
	return -1;
}

std::string first_line_with(const char *path, const char *prefix)
{
	std::ifstream in(path);
	for (std::string line; std::getline(in, line);)
		if (line.rfind(prefix, 0) == 0) {
			const auto colon = line.find(':');
			return colon == std::string::npos ? line : line.substr(colon + 2);
		}
	return "unknown";
}

std::string thp_mode()
{
	std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
	std::string all;
	std::getline(in, all);
	const auto open = all.find('['), close = all.find(']');
	return open == std::string::npos || close == std::string::npos
		       ? "unknown"
		       : all.substr(open + 1, close - open - 1);
}

void machine_params(const Options &o, Report &r)
{
	utsname u{};
	uname(&u);
	r.param("cpu", first_line_with("/proc/cpuinfo", "model name"));
	r.param("cpus", std::to_string(allowed_cpus()), true);
	r.param("kernel", u.release);
	r.param("thp", thp_mode());
	r.param("compiler", __VERSION__);
	r.param("buildtype", MRSYNC_BENCH_BUILDTYPE);
	r.param("source_tree", MRSYNC_BENCH_GIT);
	std::ifstream loadavg("/proc/loadavg");
	std::string load1;
	loadavg >> load1;
	r.param("loadavg_1min", load1.empty() ? "0" : load1, true);
	char date[32] = "";
	const std::time_t now = std::time(nullptr);
	std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
	r.param("date", date);
	r.param("regions", std::to_string(o.regions), true);
	r.param("region_bytes", std::to_string(o.region_bytes), true);
	r.param("lookups_per_thread", std::to_string(o.accesses), true);
	r.param("max_len", std::to_string(o.max_len), true);
	r.param("batches", std::to_string(o.batches), true);
	r.param("batch_ms", std::to_string(int(o.batch_ms)), true);
	r.param("miss_batch", std::to_string(o.miss_batch), true);
	r.param("max_regions", "4096", true);
	r.param("resync_bytes", std::to_string(o.resync_bytes), true);
	r.param("quick", o.quick ? "true" : "false", true);
}

/* The targets, printed beside the figures they bound. */
void targets(Report &r)
{
	r.target("hit_mru_ns", "<= 2");
	r.target("ucx_over_hit", ">= 10");
	r.target("scaling_2t_over_alu", ">= 0.95");
	r.target("rereg_over_resync", ">= 5000");
	r.target("rereg_over_resync_manual", ">= 5000");
	r.target("miss_fill_over_ucx", "<= 2");
	r.target("miss_over_ucx_evict", "<= 3");
}

} // namespace

bool Options::wants(const std::string &group) const
{
	for (const auto &g : groups)
		if (g == group)
			return true;
	return false;
}

} // namespace mrsync::bench

int main(int argc, char **argv)
{
	using namespace mrsync::bench;
	Options opts;
	if (const int rc = parse(argc, argv, opts); rc >= 0)
		return rc;
	try {
		if (!opts.only.empty()) {
			const char *fn = run_only_cache(opts);
			if (!fn)
				fn = run_only_exact(opts);
			if (!fn)
				fn = run_only_ucx(opts);
			if (!fn)
				fn = run_only_resync(opts);
			if (!fn)
				usage_error("--only takes hit, hit_mru, hit_cpp, exact_hit, ucx_hit, miss, "
					    "resync_1p, resync_16p or resync_256p");
			std::printf("%s: %llu iterations (instructions per lookup = Ir / %llu)\n", fn,
				    static_cast<unsigned long long>(opts.iterations),
				    static_cast<unsigned long long>(opts.iterations));
			return 0;
		}
		Report report;
		machine_params(opts, report);
		struct Group {
			const char *name;
			void (*run)(const Options &, Report &);
		};
		/* UCX last: its rcache patches libc's munmap (bistro hooks) for
		 * the rest of the process. */
		const Group groups[] = {{"control", run_control_rows},
					{"mrsync", run_cache_rows},
					{"exact", run_exact_rows},
					{"resync", run_resync_rows},
					{"scaling", run_scaling_rows},
					{"breakdown", run_breakdown_rows},
					{"ucx", run_ucx_rows}};
		for (const auto &g : groups) {
			if (!opts.wants(g.name))
				continue;
			try {
				g.run(opts, report);
			} catch (const Unavailable &e) {
				report.note(std::string(g.name) + " rows skipped: " + e.what());
			}
		}
		report.ratio("ucx_over_hit", "ucx_hit_ns", "hit_ns", "ucx_hit_ns / hit_ns");
		report.ratio("ucx_2t_over_hit_2t", "ucx_hit_2t_ns", "hit_2t_ns",
			     "ucx_hit_2t_ns / hit_2t_ns");
		report.ratio("scaling_2t_over_alu", "scaling_2t", "alu_scaling_2t",
			     "scaling_2t / alu_scaling_2t (the hit's 2-thread scaling against "
			     "the ALU control's)");
		report.ratio("exact_over_hit", "exact_hit_ns", "hit_ns", "exact_hit_ns / hit_ns");
		report.ratio("miss_fill_over_ucx", "miss_fill_ns", "ucx_miss_ns",
			     "miss_fill_ns / ucx_miss_ns");
		report.ratio("miss_over_ucx_evict", "miss_ns", "ucx_miss_evict_ns",
			     "miss_ns / ucx_miss_evict_ns (both evict past 4096 regions)");
		for (const char *row : {"hit_ns", "hit_2t_ns", "scaling_2t", "miss_ns", "exact_hit_ns",
					"resync_1page_1g_ns", "rereg_1g_ns", "rereg_over_resync",
					"ucx_hit_ns", "ucx_hit_2t_ns"})
			if (!report.has(row))
				report.skip(row, std::string(row).ends_with("_ns") ? "ns" : "x", row,
					    "not run (--rows)");
		targets(report);
		if (opts.json)
			report.print_json();
		else
			report.print_table();
	} catch (const std::exception &e) {
		std::fprintf(stderr, "mrsync-bench: %s\n", e.what());
		return 1;
	}
	return 0;
}
