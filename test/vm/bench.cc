/* SPDX-License-Identifier: MIT */
/*
 * munmap + mmap of a 64 KiB anonymous range (pages not touched: the syscall
 * pair alone, where the notifier's share is largest), in ns per pair, the
 * median of batches. test/vm/guest.sh runs it in one guest boot, in rounds
 * that alternate module states so that drift of the emulated machine hits
 * all alike, each phase appending "key ns" lines to one samples file:
 *
 *   mrsync_vm_bench --phase=nomod  --samples=F   module not loaded
 *   mrsync_vm_bench --phase=mod    --samples=F   module loaded
 *   mrsync_vm_bench --phase=report --samples=F   prints the JSON object
 *
 * "unwatched": the process has /dev/mrsync open and one other range watched,
 * so every munmap goes through the mm's notifier interval tree; "watched": the
 * range itself is watched (one ring entry + generation bump per munmap);
 * "watched_10k": the same with 10^4 other ranges watched. "nonotifier": a
 * forked helper without notifiers measured batch for batch beside them.
 * "read_begin": one MRSYNC_IOC_READ_BEGIN on an idle watch, the price of the
 * pin protocol's begin half.
 */
#include "vm_dev.hpp"

#include "../../apps/common/cli.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <functional>
#include <string>
#include <sys/wait.h>

using namespace mrsync_vm;

namespace {

constexpr std::size_t kLen = 64 * 1024;
constexpr int kIters = 500; /* pairs per batch */
constexpr int kBatches = 31;

char *g_range;

void pair()
{
	if (munmap(g_range, kLen) != 0 ||
	    mmap(g_range, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) != g_range) {
		perror("munmap/mmap");
		std::exit(1);
	}
}

/* ns per pair for one batch */
double batch()
{
	auto t0 = std::chrono::steady_clock::now();
	for (int i = 0; i < kIters; i++)
		pair();
	auto t1 = std::chrono::steady_clock::now();
	return std::chrono::duration<double, std::nano>(t1 - t0).count() / kIters;
}

double median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

/* Runs the batches of several configurations interleaved, so that drift of
 * the (emulated) machine hits them all alike. Each setup() runs before its
 * batch, each teardown() after, outside the timing. */
struct Config {
	const char *name;
	std::function<void()> setup, teardown;
	std::vector<double> samples;
	std::function<double()> measure = batch;
};

/*
 * A forked helper whose mm has no notifier subscriptions (fork does not copy
 * them): the no-notifier baseline, measured interleaved with the others in
 * the same boot and module state, so host noise hits both alike.
 */
class Baseline {
public:
	Baseline()
	{
		if (pipe(cmd_) != 0 || pipe(res_) != 0)
			std::exit(1);
		pid_ = fork();
		if (pid_ < 0)
			std::exit(1);
		if (pid_ == 0) {
			close(cmd_[1]);
			close(res_[0]);
			char c;
			while (read(cmd_[0], &c, 1) == 1 && c == 'b') {
				double ns = batch();
				if (write(res_[1], &ns, sizeof(ns)) != sizeof(ns))
					break;
			}
			_exit(0);
		}
		close(cmd_[0]);
		close(res_[1]);
	}
	~Baseline()
	{
		close(cmd_[1]);
		close(res_[0]);
		waitpid(pid_, nullptr, 0);
	}
	double measure()
	{
		double ns = 0;
		if (write(cmd_[1], "b", 1) != 1 || read(res_[0], &ns, sizeof(ns)) != sizeof(ns))
			std::exit(1);
		return ns;
	}

private:
	int cmd_[2], res_[2];
	pid_t pid_;
};

void run(std::vector<Config> &configs)
{
	for (int i = 0; i < 200; i++) /* warm up */
		pair();
	for (int b = 0; b < kBatches; b++) {
		for (auto &c : configs) {
			if (c.setup)
				c.setup();
			c.samples.push_back(c.measure());
			if (c.teardown)
				c.teardown();
		}
	}
}

void append(const std::string &path, const char *key, double ns)
{
	std::ofstream out(path, std::ios::app);
	out << key << ' ' << ns << '\n';
	if (!out.flush()) {
		std::fprintf(stderr, "cannot write %s\n", path.c_str());
		std::exit(1);
	}
}

/* The samples file as key -> values (one per round). */
std::map<std::string, std::vector<double>> read_samples(const std::string &path)
{
	std::map<std::string, std::vector<double>> samples;
	std::ifstream in(path);
	std::string key;
	double ns;
	while (in >> key >> ns)
		samples[key].push_back(ns);
	return samples;
}

int report(const std::string &path)
{
	auto samples = read_samples(path);
	auto get = [&](const char *key) {
		auto it = samples.find(key);
		if (it == samples.end()) {
			std::fprintf(stderr, "no '%s' samples in %s\n", key, path.c_str());
			std::exit(1);
		}
		return median(it->second);
	};
	const double nomod = get("nomod"), base = get("nonotifier");
	const double unwatched = get("unwatched"), watched = get("watched");
	const double watched10k = get("watched_10k");
	const double unwatched10k = get("unwatched_10k");
	/* *_ratio: medians against the module-less runs (other processes,
	 * alternating rounds); *_interleaved_ratio: the median over batches of
	 * batch / the helper's batch run just before it (notifier-less, same
	 * moment): the steadier of the two under TCG on a busy host */
	const double r_unwatched = get("unwatched/helper"), r_watched = get("watched/helper");
	const double r_watched10k = get("watched_10k/helper");
	std::printf("{\"read_begin_ns\": %.1f, \"munmap_nomod_ns\": %.1f, \"munmap_unwatched_ns\": %.1f, "
		    "\"munmap_watched_ns\": %.1f, \"munmap_watched_10k_ns\": %.1f, "
		    "\"unwatched_ratio\": %.3f, \"watched_ratio\": %.3f, "
		    "\"watched_10k_ratio\": %.3f, "
		    "\"munmap_nonotifier_ns\": %.1f, \"munmap_unwatched_10k_ns\": %.1f, "
		    "\"unwatched_interleaved_ratio\": %.3f, \"watched_interleaved_ratio\": %.3f, "
		    "\"watched_10k_interleaved_ratio\": %.3f, "
		    "\"rounds\": %zu, \"pairs_per_batch\": %d, \"batches\": %d, "
		    "\"range_bytes\": %zu, \"machine\": \"qemu-tcg guest\"}\n",
		    get("read_begin"), nomod, unwatched, watched, watched10k, unwatched / nomod,
		    watched / nomod,
		    watched10k / nomod, base, unwatched10k, r_unwatched, r_watched, r_watched10k,
		    samples["nomod"].size(), kIters, kBatches, kLen);
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::string phase, samples;
	const mrsync::cli::Options opts{
		{"phase", "P", "nomod (module not loaded), mod (loaded) or report (the JSON)",
		 [&phase](const char *v) -> std::optional<std::string> {
			 phase = v;
			 if (phase == "nomod" || phase == "mod" || phase == "report")
				 return std::nullopt;
			 return std::string("nomod, mod or report");
		 }},
		{"samples", "FILE", "the samples file the phases append to",
		 [&samples](const char *v) -> std::optional<std::string> {
			 samples = v;
			 return samples.empty() ? std::optional<std::string>("a file name")
						: std::nullopt;
		 }},
	};
	if (auto rc = mrsync::cli::parse({argv[0], "--phase=nomod|mod|report --samples=FILE"},
					 opts, argc, argv))
		return *rc;
	if (samples.empty() || phase.empty()) {
		std::fprintf(stderr, "%s: --phase and --samples are both needed (--help)\n",
			     argv[0]);
		return 2;
	}
	if (phase == "report")
		return report(samples);

	/* The range sits between PROT_NONE guard pages, so that whatever the
	 * process maps later (the ring, the other watched ranges) can never merge
	 * with it: a merged neighbour would turn each munmap into a split. */
	char *guarded = static_cast<char *>(mmap(nullptr, kLen + 2 * kPage, PROT_NONE,
						 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	if (guarded == MAP_FAILED)
		return 1;
	g_range = guarded + kPage;
	if (mmap(g_range, kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
		 0) != g_range)
		return 1;

	if (phase == "nomod") {
		std::vector<Config> configs{{"nomod", {}, {}, {}}};
		run(configs);
		append(samples, "nomod", median(configs[0].samples));
		return 0;
	}
	if (access("/dev/mrsync", F_OK) != 0) {
		std::fprintf(stderr, "no /dev/mrsync\n");
		return 77;
	}

	Baseline helper;
	std::function<double()> helper_batch = [&] { return helper.measure(); };
	Dev dev(MRSYNC_RING_MAX);
	Anon elsewhere(kPage);
	if (dev.watch(elsewhere.get(), kPage, 1, nullptr) != 0)
		return 1;
	std::uint64_t id = 0;
	auto watch = [&] {
		if (dev.watch(g_range, kLen, 2, &id) != 0)
			std::exit(1);
	};
	auto unwatch = [&] {
		dev.unwatch(id);
		dev.drain();
	};
	std::vector<Config> plain{{"nonotifier", {}, {}, {}, helper_batch},
				  {"unwatched", {}, {}, {}},
				  {"watched", watch, unwatch, {}}};
	run(plain);

	/* The begin half of the pin protocol on an idle watch: what every pin
	 * with the module as the source pays (docs/kmod.md, READ_BEGIN). */
	{
		std::uint64_t idle = 0;
		if (dev.watch(g_range, kLen, 4, &idle) != 0)
			return 1;
		std::vector<Config> begin{{"read_begin", {}, {}, {}, [&] {
			auto t0 = std::chrono::steady_clock::now();
			for (int i = 0; i < kIters; i++)
				if (dev.read_begin(idle) != 0)
					std::exit(1);
			auto t1 = std::chrono::steady_clock::now();
			return std::chrono::duration<double, std::nano>(t1 - t0).count() / kIters;
		}}};
		run(begin);
		dev.unwatch(idle);
		append(samples, "read_begin", median(begin[0].samples));
	}

	/* 10^4 other watched ranges, one page each, in a reserved area */
	constexpr std::size_t kOthers = 10000;
	void *area = mmap(nullptr, 2 * kOthers * kPage, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (area == MAP_FAILED)
		return 1;
	for (std::size_t i = 0; i < kOthers; i++)
		if (dev.watch(static_cast<char *>(area) + 2 * i * kPage, kPage, 3, nullptr) != 0)
			return 1;
	std::vector<Config> many{{"nonotifier_10k", {}, {}, {}, helper_batch},
				 {"unwatched_10k", {}, {}, {}},
				 {"watched_10k", watch, unwatch, {}}};
	run(many);

	for (const auto *configs : {&plain, &many}) {
		const Config &helper_config = configs->front();
		for (const auto &c : *configs) {
			append(samples, c.name, median(c.samples));
			if (&c == &helper_config)
				continue;
			/* batch b of each config ran right after batch b of the helper */
			std::vector<double> ratios;
			for (std::size_t b = 0; b < c.samples.size(); b++)
				ratios.push_back(c.samples[b] / helper_config.samples[b]);
			append(samples, (std::string(c.name) + "/helper").c_str(), median(ratios));
		}
	}
	return 0;
}
