/* SPDX-License-Identifier: MIT */
/* Where a resync's time goes (issue 14, item 2), on the uring driver:
 *
 *  --rows breakdown: 1 and 256 changed pages of a 1 GiB registration, each
 *    sample as in the scaling rows (mmap(MAP_FIXED) fresh pages, untimed;
 *    then mrsync_resync + a get of each page, timed). The context's driver
 *    is "uring-timed": the real uring HCA behind a decorator that times each
 *    driver call, so the split is pin / map / fence / unpin inside the
 *    driver and the rest (drain, the core's bookkeeping, the page table)
 *    outside it. Rows breakdown_<n>p_<part>_ns, medians of the samples.
 *
 *  --only resync_1p | resync_16p | resync_256p (callgrind): the same sample
 *    `iterations` times; the timed part is mrsync_bench_resync_once, so
 *      valgrind --tool=callgrind --toggle-collect=mrsync_bench_resync_once \
 *          mrsync-bench --only resync_256p --iterations 8 --source manual
 *    counts the resync alone (Ir / iterations per resync). */
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <random>
#include <set>
#include <string>

#include <mrsync/driver.hpp>
#include <mrsync/uring.hpp>

#include "bench.hpp"
#include "loops.hpp"
#include "timing.hpp"
#include "workload.hpp"

namespace mrsync::bench {

namespace {

constexpr std::uint64_t kPage = 4096;

/* The driver calls timed, in ns, since the last reset. */
enum Part { kPin, kMap, kFence, kUnpin, kParts };
constexpr const char *kPartNames[kParts] = {"pin", "map", "fence", "unpin"};
std::array<std::uint64_t, kParts> g_spent{};

/* Adds the time of one call to `part` when it goes out of scope. */
class Timer {
public:
	explicit Timer(Part part) noexcept : part_(part), t0_(now_ns()) {}
	~Timer() { g_spent[part_] += now_ns() - t0_; }
	Timer(const Timer &) = delete;
	Timer &operator=(const Timer &) = delete;

private:
	Part part_;
	std::uint64_t t0_;
};

/* The uring HCA, each call timed (a decorator, not a model: every call is
 * the real driver's). Same thread-safety as the driver it wraps. */
class TimedUring final : public Driver {
public:
	explicit TimedUring(std::unique_ptr<Driver> inner) : inner_(std::move(inner)) {}

	std::string_view name() const noexcept override { return "uring-timed"; }
	DriverCaps caps() const noexcept override { return inner_->caps(); }
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override
	{
		Timer t(kPin);
		return inner_->pin(va, len);
	}
	void unpin(BackingId backing) noexcept override
	{
		Timer t(kUnpin);
		inner_->unpin(backing);
	}
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> translation) override
	{
		return inner_->create(va, len, access, translation);
	}
	Result<Keys> map(Keys keys, std::span<const Extent> translation) override
	{
		Timer t(kMap);
		return inner_->map(keys, translation);
	}
	Result<Keys> map_changed(Keys keys, std::span<const Extent> translation,
				 std::span<const Range> changed) override
	{
		Timer t(kMap);
		return inner_->map_changed(keys, translation, changed);
	}
	void destroy(Keys keys) noexcept override { inner_->destroy(keys); }
	Status fence() override
	{
		Timer t(kFence);
		return inner_->fence();
	}
	void abandon() noexcept override { inner_->abandon(); }

private:
	std::unique_ptr<Driver> inner_;
};

Result<std::unique_ptr<Driver>> make_timed(const DriverConfig &)
{
	auto hca = uring::Hca::create();
	if (!hca)
		return std::move(hca).error();
	return std::unique_ptr<Driver>(new TimedUring(std::move(hca).value()));
}

const DriverFactory kTimedFactory{
	.name = "uring-timed",
	.available = &uring::Hca::available,
	.create = &make_timed,
};

} // namespace

std::vector<char *> fresh_pages(const Mapping &big, std::uint32_t count, std::mt19937_64 &rng,
				std::set<std::uint64_t> &used)
{
	std::uniform_int_distribution<std::uint64_t> pick(0, big.size() / kPage - 1);
	std::vector<char *> pages;
	while (pages.size() < count)
		if (const std::uint64_t page = pick(rng); used.insert(page).second)
			pages.push_back(big.data() + page * kPage);
	return pages;
}

namespace {

/* A context on `driver` with all of `big` registered in one shot. */
MadeContext registered(const Options &opts, const char *driver, const Mapping &big)
{
	MadeContext made = make_context(opts, driver);
	if (auto ok = made.ctx.hint(big.data(), big.size(), MRSYNC_ACCESS_ALL); !ok)
		throw std::runtime_error(std::string(driver) + ": mrsync_hint: " + ok.error().message);
	return made;
}

void throw_if_failed(std::uint64_t sum)
{
	if (sum == UINT64_MAX)
		throw std::runtime_error(std::string("resync or the get after it: ") +
					 mrsync_last_error());
	consume(sum);
}

} // namespace

void run_breakdown_rows(const Options &opts, Report &report)
{
	const int samples = opts.quick ? 3 : 7;
	CpuPin cpu(0);
	Mapping big(opts.resync_bytes, true);
	MadeContext made = registered(opts, "uring-timed", big);
	std::mt19937_64 rng(0x62726b646eull);
	std::set<std::uint64_t> used;
	for (const std::uint32_t n : {1u, 256u}) {
		/* per sample: total, resync's own part outside the driver, the
		 * lookups' part outside the driver, then each driver call */
		std::vector<double> total, cpu, resync_core, get_core;
		std::array<std::vector<double>, kParts> parts;
		for (int s = 0; s < samples; ++s) {
			const std::vector<char *> pages = fresh_pages(big, n, rng, used);
			replace_pages(made, pages);
			g_spent = {};
			const std::uint64_t c0 = thread_cpu_ns();
			const std::uint64_t t0 = now_ns();
			throw_if_failed(mrsync_bench_resync_once(made.ctx.c_handle(), pages.data(),
								 0, true));
			const std::uint64_t t1 = now_ns();
			const auto in_resync = g_spent;
			throw_if_failed(mrsync_bench_resync_once(made.ctx.c_handle(), pages.data(),
								 pages.size(), false));
			const std::uint64_t t2 = now_ns();
			cpu.push_back(double(thread_cpu_ns() - c0));
			std::uint64_t driver_resync = 0, driver_all = 0;
			for (int p = 0; p < kParts; ++p) {
				driver_resync += in_resync[p];
				driver_all += g_spent[p];
				parts[p].push_back(double(g_spent[p]));
			}
			total.push_back(double(t2 - t0));
			resync_core.push_back(double(t1 - t0 - driver_resync));
			get_core.push_back(double(t2 - t1 - (driver_all - driver_resync)));
		}
		const std::string row = "breakdown_" + std::to_string(n) + "p_";
		const std::string of = std::to_string(n) + " changed pages of 1 GiB: ";
		report.set(row + "total_ns", median(total), "ns", of + "mrsync_resync + a get of each");
		report.set(row + "cpu_ns", median(cpu), "ns",
			   of + "the same, the thread's CPU time (no time lost to other processes)");
		report.set(row + "drain_core_ns", median(resync_core), "ns",
			   of + "mrsync_resync outside the driver (drain, invalidate bookkeeping)");
		report.set(row + "lookup_core_ns", median(get_core), "ns",
			   of + "the gets outside the driver (find, page table, translation)");
		for (int p = 0; p < kParts; ++p)
			report.set(row + kPartNames[p] + "_ns", median(parts[p]), "ns",
				   of + "driver " + kPartNames[p] + " (all calls)");
	}
	report.param("breakdown_samples", std::to_string(samples), true);
	report.param("breakdown_source", made.source);
}

const char *run_only_resync(const Options &opts)
{
	std::uint32_t n = 0;
	if (opts.only == "resync_1p")
		n = 1;
	else if (opts.only == "resync_16p")
		n = 16;
	else if (opts.only == "resync_256p")
		n = 256;
	else
		return nullptr;
	Mapping big(opts.resync_bytes, true);
	MadeContext made = registered(opts, "uring", big);
	std::mt19937_64 rng(0x63616c6cull);
	std::set<std::uint64_t> used;
	for (std::uint64_t i = 0; i < opts.iterations; ++i) {
		const std::vector<char *> pages = fresh_pages(big, n, rng, used);
		replace_pages(made, pages);
		throw_if_failed(mrsync_bench_resync_once(made.ctx.c_handle(), pages.data(),
							 pages.size(), true));
	}
	const mrsync_stats s = made.ctx.stats();
	std::fprintf(stderr, "source %s: %" PRIu64 " resyncs, %" PRIu64 " entries re-pinned\n",
		     made.source.c_str(), s.resyncs, s.entries_repinned);
	return "mrsync_bench_resync_once";
}

} // namespace mrsync::bench

MRSYNC_REGISTER_DRIVER(mrsync::bench::kTimedFactory)
