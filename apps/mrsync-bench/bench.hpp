/* SPDX-License-Identifier: MIT */
/* mrsync-bench: options, the report every row writes into, and the rows.
 * One file per concern: timing.* (batches, medians, threads), workload.*
 * (regions and random lookups), loops.* (the timed loops, stable names for
 * callgrind), hit_rows.cpp (1 thread per CPU, 2 threads, scaling),
 * control_rows.cpp (what the machine's CPUs allow), cache_rows.cpp (mrsync's
 * hit and miss), exact_rows.cpp, resync_rows.cpp (uring),
 * ucx_rows.cpp + ucx_peer.c (the UCX peer), report.cpp (table, JSON). */
#ifndef MRSYNC_BENCH_HPP
#define MRSYNC_BENCH_HPP

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <mrsync/mrsync.hpp>

#include "access.h"

namespace mrsync::bench {

struct Sample; /* timing.hpp */

struct Options {
	bool json = false;
	bool quick = false;
	int batches = 11;           /**< timed batches per row; the median is reported */
	double batch_ms = 10;       /**< target duration of one batch */
	std::uint32_t regions = 1024;
	std::uint64_t region_bytes = 64 << 10;
	std::uint32_t accesses = 16384; /**< precomputed lookups per thread (power of two) */
	std::uint64_t max_len = 2048;   /**< lookup lengths are 1 .. max_len */
	std::uint32_t sources = MRSYNC_SOURCE_UFFD; /**< for the hit, miss and resync contexts */
	bool source_given = false;  /**< --source: no fallback to the manual source */
	std::uint32_t miss_batch = 256; /**< misses per timed batch */
	int resync_samples = 41;
	int rereg_samples = 5;
	std::uint64_t resync_bytes = 1ull << 30;
	std::vector<std::string> groups = {"control", "mrsync", "exact", "resync", "ucx"};
	std::string only;           /**< callgrind mode: one loop, `iterations` times */
	std::uint64_t iterations = 1'000'000;

	bool wants(const std::string &group) const;
};

/** What a run measured, in the order it was measured. */
class Report {
public:
	/** A figure; `unit` is "ns" or "x" (a ratio). */
	void set(const std::string &name, double value, const char *unit, std::string what);
	/** A figure that could not be measured: JSON null, the table says why. */
	void skip(const std::string &name, const char *unit, std::string what, std::string why);
	/** A parameter of the run (numbers are given already formatted). */
	void param(const std::string &name, std::string value, bool is_number = false);
	void note(std::string text) { notes_.push_back(std::move(text)); }
	/** set() from a timed sample; counts its disturbed batches and notes
	 *  a median that had to include them. */
	void set(const std::string &name, const Sample &s, std::string what);

	std::optional<double> get(const std::string &name) const;
	/** Whether `name` was measured or skipped. */
	bool has(const std::string &name) const;
	/** Sets `name` = a / b when both were measured, else skips it. */
	void ratio(const std::string &name, const std::string &a, const std::string &b,
		   std::string what);

	/** The target for figure `row`, e.g. "<= 2": printed beside the
	 *  figure (and under "targets" in JSON), for the reader to compare. */
	void target(const std::string &row, std::string bound);
	/** The target of `row`, or "" if it has none. */
	std::string target_of(const std::string &row) const;

	void print_table() const;
	void print_json() const;

private:
	struct Figure {
		std::string name;
		std::optional<double> value;
		std::string unit, what, why;
	};
	struct Param {
		std::string name, value;
		bool is_number;
	};
	Figure *find(const std::string &name);
	std::vector<Figure> figures_;
	std::vector<Param> params_;
	std::vector<std::string> notes_;
	std::vector<std::pair<std::string, std::string>> targets_; /* row, bound */
	std::string disturbed_; /* "row:n ..." for rows with disturbed batches */
};

/** A row cannot run here (driver or peer missing): the row is skipped. */
struct Unavailable : std::runtime_error {
	using std::runtime_error::runtime_error;
};

struct MadeContext {
	mrsync::Context ctx;
	std::string source;   /**< "uffd" or "manual" */
	std::string fallback; /**< why the manual source replaced userfaultfd, or "" */
};

/** A context on `driver` with opts.sources, falling back to the manual
 *  source when userfaultfd is unavailable (unless --source was given).
 *  Throws Unavailable (ENODEV) or std::runtime_error. */
MadeContext make_context(const Options &opts, const char *driver);

struct Workload; /* workload.hpp */

struct PerCpu; /* timing.hpp */

/** Reports `name` as the fastest CPU's median (one thread alone), with each
 *  CPU's median as params `<name>_cpu0`, `<name>_cpu1`. */
void report_alone(Report &report, const std::string &name, const PerCpu &each,
		  const std::string &what);

/** The rows of one hit loop: 1 thread, 2 threads at once, their scaling. */
struct HitRows {
	const char *one, *two, *scaling; /**< row names */
	std::string what;                /**< what the 1-thread row times */
};

/** Times loop_on(w.lookups[0]) on one thread alone on each CPU, then
 *  loop_on(w.lookups[0]) and loop_on(w.lookups[1]) on two threads at once,
 *  and reports the three rows (the 2-thread ones are skipped on a single
 *  CPU); each thread of the pair is compared with one alone on its CPU.
 *  @return the 1-thread row, ns. */
double time_hit_rows(const Options &opts, Report &report, const Workload &w,
		     const std::function<std::uint64_t(const bench_access *, std::uint64_t,
						       std::uint64_t)> &loop_on,
		     const HitRows &rows);

/* The rows. Each writes its figures into the report; a missing peer or
 * driver is a skip, anything else throws std::runtime_error. */
void run_control_rows(const Options &opts, Report &report);
void run_cache_rows(const Options &opts, Report &report);
void run_exact_rows(const Options &opts, Report &report);
void run_resync_rows(const Options &opts, Report &report);
/** --rows scaling (not run by default: it populates and pins 16 MiB ...
 *  4 GiB): resync cost by pages changed and registration size. */
void run_scaling_rows(const Options &opts, Report &report);
void run_ucx_rows(const Options &opts, Report &report);
/** --rows breakdown (only when asked): where a resync's time goes, by
 *  driver call, for 1 and 256 changed pages of 1 GiB (resync_profile.cpp). */
void run_breakdown_rows(const Options &opts, Report &report);

/** mmap(MAP_FIXED)s a fresh page at each of `pages` and makes sure the
 *  context can see it (the manual source is told; the userfaultfd monitor
 *  is given 1 ms to publish). Untimed set-up of the resync rows. */
void replace_pages(MadeContext &made, std::span<char *const> pages);

class Mapping; /* workload.hpp */
/** `count` random pages of `big` not in `used`, added to it (resync rows). */
std::vector<char *> fresh_pages(const Mapping &big, std::uint32_t count, std::mt19937_64 &rng,
				std::set<std::uint64_t> &used);

/* Callgrind mode (--only NAME): one loop, opts.iterations times, after a
 * warm-up that runs other code. Each returns the loop function's name (for
 * --toggle-collect), or nullptr when NAME is not one of its rows. */
const char *run_only_cache(const Options &opts);
const char *run_only_exact(const Options &opts);
const char *run_only_ucx(const Options &opts);
const char *run_only_resync(const Options &opts);

/** Whether this binary was built with the UCX peer. */
bool have_ucx();

} // namespace mrsync::bench

#endif
