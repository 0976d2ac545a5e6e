/* SPDX-License-Identifier: MIT */
#include "timing.hpp"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace mrsync::bench {

namespace {

std::atomic<std::uint64_t> g_sink{0};

constexpr std::uint64_t kFailed = UINT64_MAX;
constexpr std::uint64_t kFirstBatch = 1024;

int nth_allowed_cpu(int index)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return -1;
	const int count = CPU_COUNT(&set);
	if (count == 0)
		return -1;
	index %= count;
	for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
		if (CPU_ISSET(cpu, &set) && index-- == 0)
			return cpu;
	return -1;
}

void check(std::uint64_t checksum)
{
	if (checksum == kFailed)
		throw std::runtime_error("a lookup failed inside a timed loop");
	consume(checksum);
}

/* One batch: wall time, and whether a timed thread lost its CPU during it. */
struct Batch {
	double wall_ns = 0;
	double cpu_ns = 0; /* the timed threads' own CPU time (mean of two) */
	bool disturbed = false;
	double thread_ns[2] = {0, 0}; /* wall time of each thread (two-thread batches) */
};

/* Grows n until one batch lasts the target (these runs warm the caches). */
template <class RunBatch>
std::uint64_t calibrate(RunBatch &&run, double batch_ms)
{
	const double target_ns = batch_ms * 1e6;
	std::uint64_t n = kFirstBatch;
	for (;;) {
		const double ns = run(n).wall_ns;
		if (ns >= target_ns / 4 || n >= (1ull << 34)) {
			const double per_op = ns / double(n);
			return std::max<std::uint64_t>(kFirstBatch, std::uint64_t(target_ns / per_op));
		}
		n *= 4;
	}
}

/* What a row falls back on when fewer than half its batches were undisturbed. */
enum class Fallback {
	/* One thread: its own CPU time per operation (time spent descheduled is
	 * not the operation's). */
	cpu_time,
	/* Two threads: CPU time would hide contention (a thread that ran alone
	 * met none), so only undisturbed batches -- the ones where both threads
	 * overlapped throughout -- count, however few; with none, wall time. */
	clean_only,
};

/* Runs batches of n until `want` undisturbed ones (or `tries` in all). */
template <class RunBatch>
Sample sample(RunBatch &&run, std::uint64_t n, int want, int tries, Fallback fallback)
{
	std::vector<double> clean, cpu, wall;
	std::vector<double> clean_t[2], wall_t[2]; /* per thread, ns per operation */
	int disturbed = 0;
	for (int i = 0; i < tries && int(clean.size()) < want; ++i) {
		const Batch b = run(n);
		cpu.push_back(b.cpu_ns / double(n));
		wall.push_back(b.wall_ns / double(n));
		for (int k = 0; k < 2; ++k)
			wall_t[k].push_back(b.thread_ns[k] / double(n));
		if (b.disturbed) {
			++disturbed;
			continue;
		}
		clean.push_back(b.wall_ns / double(n));
		for (int k = 0; k < 2; ++k)
			clean_t[k].push_back(b.thread_ns[k] / double(n));
	}
	Sample s;
	std::vector<double> *used = &clean, *used_t = clean_t;
	const std::string busy = "the machine was busy (" + std::to_string(disturbed) +
				 " batches lost the CPU): ";
	if (2 * int(clean.size()) < want) {
		s.clean = false;
		if (fallback == Fallback::cpu_time) {
			used = &cpu;
			s.caveat = busy + "median of the thread's CPU time per operation";
		} else if (!clean.empty()) {
			s.caveat = busy + "median of the " + std::to_string(clean.size()) +
				   " batches where both threads kept their CPU";
		} else {
			used = &wall;
			used_t = wall_t;
			s.caveat = busy + "no batch where both threads kept their CPU; "
					  "wall-clock median, contention understated";
		}
	}
	for (int k = 0; k < 2; ++k)
		s.thread_ns[k] = median(used_t[k]);
	s.per_batch = n;
	s.batches = int(used->size());
	s.disturbed = disturbed;
	s.min_ns = *std::min_element(used->begin(), used->end());
	s.max_ns = *std::max_element(used->begin(), used->end());
	s.median_ns = median(std::move(*used));
	return s;
}

} // namespace

bool was_disturbed(std::uint64_t wall_ns, std::uint64_t cpu_ns) noexcept
{
	return double(wall_ns) > double(cpu_ns) * 1.02 + 20'000;
}

void consume(std::uint64_t checksum) noexcept
{
	g_sink.fetch_add(checksum, std::memory_order_relaxed);
}

std::uint64_t thread_cpu_ns() noexcept
{
	timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec);
}

std::uint64_t now_ns() noexcept
{
	timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec);
}

double median(std::vector<double> v)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	const std::size_t mid = v.size() / 2;
	return v.size() % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

int allowed_cpus()
{
	cpu_set_t set;
	CPU_ZERO(&set);
	return sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

CpuPin::CpuPin(int index)
{
	static_assert(sizeof(saved_) >= sizeof(cpu_set_t));
	cpu_set_t old;
	if (pthread_getaffinity_np(pthread_self(), sizeof(old), &old) != 0)
		return;
	const int cpu = nth_allowed_cpu(index);
	if (cpu < 0)
		return;
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (pthread_setaffinity_np(pthread_self(), sizeof(one), &one) != 0)
		return;
	std::memcpy(saved_, &old, sizeof(old));
	restore_ = true;
}

CpuPin::~CpuPin()
{
	if (!restore_)
		return;
	cpu_set_t old;
	std::memcpy(&old, saved_, sizeof(old));
	pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
}

namespace {

/* Runs loop batches on the calling thread, from operation 0 on. */
class OneThread {
public:
	explicit OneThread(const Loop &loop) : loop_(loop) {}
	Batch operator()(std::uint64_t n)
	{
		const std::uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
		const std::uint64_t sum = loop_(next_, n);
		const std::uint64_t t1 = now_ns(), c1 = thread_cpu_ns();
		check(sum);
		next_ += n;
		const double wall = double(t1 - t0);
		return Batch{wall, double(c1 - c0), was_disturbed(t1 - t0, c1 - c0), {wall, wall}};
	}

private:
	const Loop &loop_;
	std::uint64_t next_ = 0;
};

} // namespace

Sample time_one_thread(const Loop &loop, const TimingOptions &t, int cpu)
{
	CpuPin pin(cpu);
	OneThread run(loop);
	return sample(run, calibrate(run, t.batch_ms), t.batches, 4 * t.batches,
		      Fallback::cpu_time);
}

PerCpu time_each_cpu(const Loop &loop, const TimingOptions &t)
{
	PerCpu each;
	each.cpus = std::min(2, allowed_cpus());
	for (int cpu = 0; cpu < each.cpus; ++cpu)
		each.on[cpu] = time_one_thread(loop, t, cpu);
	return each;
}

Sample time_fixed(const Loop &loop, std::uint64_t n, int batches)
{
	CpuPin pin(0);
	OneThread run(loop);
	return sample(run, n, batches, 4 * batches, Fallback::cpu_time);
}

Sample time_once(const Loop &loop, std::uint64_t n)
{
	CpuPin pin(0);
	OneThread run(loop);
	const Batch b = run(n);
	Sample s;
	s.median_ns = s.min_ns = s.max_ns = (b.disturbed ? b.cpu_ns : b.wall_ns) / double(n);
	s.per_batch = n;
	s.batches = 1;
	s.disturbed = b.disturbed;
	s.clean = !b.disturbed;
	if (b.disturbed)
		s.caveat = "the thread lost its CPU: its CPU time per operation";
	return s;
}

Sample time_two_threads(const Loop &loop0, const Loop &loop1, const TimingOptions &t)
{
	/* main + 2 workers meet at `go` before a batch and at `done` after it */
	std::barrier<> go(3), done(3);
	std::uint64_t n = 0, next = 0;
	bool stop = false;
	double elapsed[2] = {0, 0}, cpu[2] = {0, 0};
	bool disturbed[2] = {false, false};
	std::atomic<bool> failed{false};

	auto worker = [&](int index, const Loop &loop) {
		CpuPin pin(index);
		for (;;) {
			go.arrive_and_wait();
			if (stop)
				return;
			const std::uint64_t c0 = thread_cpu_ns(), t0 = now_ns();
			const std::uint64_t sum = loop(next, n);
			const std::uint64_t t1 = now_ns(), c1 = thread_cpu_ns();
			if (sum == kFailed)
				failed.store(true);
			consume(sum);
			elapsed[index] = double(t1 - t0);
			cpu[index] = double(c1 - c0);
			disturbed[index] = was_disturbed(t1 - t0, c1 - c0);
			done.arrive_and_wait();
		}
	};
	std::thread w0(worker, 0, std::cref(loop0));
	std::thread w1(worker, 1, std::cref(loop1));
	/* A batch is worth the mean of the two threads' times; it is disturbed
	 * if either thread lost its CPU (then they did not overlap throughout). */
	auto run = [&](std::uint64_t count) {
		n = count;
		go.arrive_and_wait();
		done.arrive_and_wait();
		next += count;
		return Batch{(elapsed[0] + elapsed[1]) / 2, (cpu[0] + cpu[1]) / 2,
			     disturbed[0] || disturbed[1], {elapsed[0], elapsed[1]}};
	};
	Sample result;
	try {
		/* Short batches: under load two CPUs are rarely both ours for long. */
		result = sample(run, calibrate(run, t.batch_ms / 4), t.batches, 8 * t.batches,
				Fallback::clean_only);
	} catch (...) {
		stop = true;
		go.arrive_and_wait();
		w0.join();
		w1.join();
		throw;
	}
	stop = true;
	go.arrive_and_wait();
	w0.join();
	w1.join();
	if (failed.load())
		throw std::runtime_error("a lookup failed inside a timed loop (2 threads)");
	return result;
}

} // namespace mrsync::bench
