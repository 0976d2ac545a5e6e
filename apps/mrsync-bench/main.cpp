/* SPDX-License-Identifier: MIT */
/* mrsync-bench: mrsync's registration cache against its peers, side by side
 * in one run (see docs/benchmarks.md). */
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>

#include "bench.hpp"
#include "bench_version.h"
#include "timing.hpp"

#ifndef MRSYNC_BENCH_BUILDTYPE
#define MRSYNC_BENCH_BUILDTYPE "unknown"
#endif

namespace mrsync::bench {

namespace {

const char kUsage[] =
	"usage: mrsync-bench [--json] [--quick] [options]\n"
	"  --json              print one JSON object instead of a table\n"
	"  --quick             short run for CI (fewer and shorter batches)\n"
	"  --batches N         timed batches per row, the median is reported (11)\n"
	"  --batch-ms MS       target length of one batch (10)\n"
	"  --rows LIST         groups to run, comma-separated:\n"
	"                      control,mrsync,exact,resync,ucx (all)\n"
	"  --source S          event source of the mrsync contexts: uffd, kmod or manual\n"
	"                      (default uffd, falling back to manual if unavailable)\n"
	"  --resync-samples N  remapped pages timed in the resync row (41)\n"
	"  --rereg-samples N   1 GiB re-registrations timed (5)\n"
	"  --only ROW          run one loop for callgrind: hit, hit_cpp, exact_hit, ucx_hit, miss\n"
	"  --iterations N      iterations of that loop (1000000)\n"
	"instructions per lookup (no hardware counters needed):\n"
	"  valgrind --tool=callgrind --toggle-collect=mrsync_bench_hit_loop \\\n"
	"      mrsync-bench --only hit --iterations 1000000   # then Ir / 1000000\n";

[[noreturn]] void usage_error(const std::string &what)
{
	std::fprintf(stderr, "mrsync-bench: %s\n%s", what.c_str(), kUsage);
	std::exit(2);
}

const char *string_arg(int &i, int argc, char **argv)
{
	if (i + 1 >= argc)
		usage_error(std::string(argv[i]) + " needs a value");
	return argv[++i];
}

long long number_arg(int &i, int argc, char **argv, long long min)
{
	if (i + 1 >= argc)
		usage_error(std::string(argv[i]) + " needs a value");
	char *end = nullptr;
	const long long v = std::strtoll(argv[i + 1], &end, 10);
	if (!*argv[i + 1] || *end || v < min)
		usage_error(std::string(argv[i]) + ": '" + argv[i + 1] + "' is not a number >= " +
			    std::to_string(min));
	++i;
	return v;
}

/* The numeric options, and what --quick sets them to unless they are given. */
struct NumberOption {
	const char *flag;
	long long quick; /* 0: --quick leaves it alone */
	void (*set)(Options &o, long long v);
};
constexpr NumberOption kNumbers[] = {
	{"--batches", 5, [](Options &o, long long v) { o.batches = int(v); }},
	{"--batch-ms", 4, [](Options &o, long long v) { o.batch_ms = double(v); }},
	{"--resync-samples", 11, [](Options &o, long long v) { o.resync_samples = int(v); }},
	{"--rereg-samples", 2, [](Options &o, long long v) { o.rereg_samples = int(v); }},
	{"--iterations", 0, [](Options &o, long long v) { o.iterations = std::uint64_t(v); }},
};

Options parse(int argc, char **argv)
{
	Options o;
	bool given[std::size(kNumbers)] = {};
	for (int i = 1; i < argc; ++i) {
		const std::string a = argv[i];
		const auto number = std::find_if(std::begin(kNumbers), std::end(kNumbers),
						 [&](const NumberOption &n) { return a == n.flag; });
		if (number != std::end(kNumbers)) {
			number->set(o, number_arg(i, argc, argv, 1));
			given[number - std::begin(kNumbers)] = true;
		} else if (a == "--json") {
			o.json = true;
		} else if (a == "--quick") {
			o.quick = true;
		} else if (a == "--rows") {
			o.groups.clear();
			std::stringstream list(string_arg(i, argc, argv));
			for (std::string g; std::getline(list, g, ',');) {
				if (g != "control" && g != "mrsync" && g != "exact" && g != "resync" &&
				    g != "ucx")
					usage_error("unknown row group '" + g + "'");
				o.groups.push_back(g);
			}
		} else if (a == "--source") {
			const std::string s = string_arg(i, argc, argv);
			if (s == "uffd")
				o.sources = MRSYNC_SOURCE_UFFD;
			else if (s == "manual")
				o.sources = MRSYNC_SOURCE_MANUAL;
			else if (s == "kmod")
				o.sources = MRSYNC_SOURCE_KMOD;
			else
				usage_error("--source is uffd, kmod or manual");
			o.source_given = true;
		} else if (a == "--only") {
			o.only = string_arg(i, argc, argv);
		} else if (a == "--help" || a == "-h") {
			std::printf("%s", kUsage);
			std::exit(0);
		} else {
			usage_error("unknown option '" + a + "'");
		}
	}
	if (o.quick)
		for (std::size_t k = 0; k < std::size(kNumbers); ++k)
			if (kNumbers[k].quick && !given[k])
				kNumbers[k].set(o, kNumbers[k].quick);
	return o;
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

/* The targets, checked against what this run measured. */
void targets(Report &r)
{
	struct Target {
		const char *name, *row;
		double limit;
		bool at_most;
	};
	const Target all[] = {
		{"hit_ns <= 2", "hit_ns", 2, true},
		{"ucx_over_hit >= 20", "ucx_over_hit", 20, false},
		{"scaling_2t >= 1.9", "scaling_2t", 1.9, false},
		{"rereg_over_resync >= 1000", "rereg_over_resync", 1000, false},
	};
	for (const auto &t : all) {
		const auto v = r.get(t.row);
		r.target(t.name, v ? std::optional<bool>(t.at_most ? *v <= t.limit : *v >= t.limit)
				   : std::nullopt);
	}
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
	const Options opts = parse(argc, argv);
	try {
		if (!opts.only.empty()) {
			const char *fn = run_only_cache(opts);
			if (!fn)
				fn = run_only_exact(opts);
			if (!fn)
				fn = run_only_ucx(opts);
			if (!fn)
				usage_error("--only takes hit, hit_cpp, exact_hit, ucx_hit or miss");
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
		report.ratio("exact_over_hit", "exact_hit_ns", "hit_ns", "exact_hit_ns / hit_ns");
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
