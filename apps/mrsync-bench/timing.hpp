/* SPDX-License-Identifier: MIT */
/* mrsync-bench timing: a loop is run in batches of n operations, n chosen so
 * a batch lasts about --batch-ms; each batch gives ns per operation and a row
 * reports the median batch. Threads are pinned to distinct CPUs.
 *
 * The machines this runs on are shared: a batch during which a timed thread
 * was descheduled (its wall time exceeds its own CPU time) is "disturbed",
 * set aside and run again (up to 4x the batches asked for, 8x for two
 * threads). The median is over undisturbed batches when at least half the
 * batches asked for are; else one thread falls back on its own CPU time per
 * operation, and two threads on however few undisturbed batches there were
 * (CPU time would hide contention); Sample::caveat says which. */
#ifndef MRSYNC_BENCH_TIMING_HPP
#define MRSYNC_BENCH_TIMING_HPP

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mrsync::bench {

/** Runs operations [start, start + n) of a workload; returns a checksum, or
 *  UINT64_MAX when an operation failed. */
using Loop = std::function<std::uint64_t(std::uint64_t start, std::uint64_t n)>;

struct Sample {
	double median_ns = 0; /**< ns per operation, median batch */
	double min_ns = 0;
	double max_ns = 0;
	std::uint64_t per_batch = 0; /**< operations per batch (per thread) */
	int batches = 0;    /**< batches the median was taken over */
	int disturbed = 0;  /**< batches run during which a timed thread was descheduled */
	bool clean = true;  /**< wall-clock median over enough undisturbed batches */
	std::string caveat; /**< when not clean: what the median is instead */
	double thread_ns[2] = {0, 0}; /**< two threads: each one's median, ns per operation */
};

struct TimingOptions {
	int batches = 11;
	double batch_ms = 20;
};

std::uint64_t now_ns() noexcept;
/** CPU time of the calling thread (user + system). */
std::uint64_t thread_cpu_ns() noexcept;
double median(std::vector<double> v);

/** The loop on the calling thread, pinned to the cpu-th allowed CPU. The
 *  calibration batches double as warm-up. Throws if the loop fails. */
Sample time_one_thread(const Loop &loop, const TimingOptions &t, int cpu = 0);

/** One thread alone on each allowed CPU in turn (two at most): virtual CPUs
 *  are not always equally fast, their host may be slowing one down. */
struct PerCpu {
	Sample on[2];
	int cpus = 0;
	/** The CPU where the loop ran fastest (host interference only adds). */
	const Sample &fastest() const noexcept
	{
		return cpus > 1 && on[1].median_ns < on[0].median_ns ? on[1] : on[0];
	}
};
PerCpu time_each_cpu(const Loop &loop, const TimingOptions &t);

/** Like time_one_thread with a fixed batch of n operations, no calibration
 *  (for loops that consume fresh addresses: at most 4 * batches * n). */
Sample time_fixed(const Loop &loop, std::uint64_t n, int batches);

/** One batch of n operations on the calling thread (pinned). */
Sample time_once(const Loop &loop, std::uint64_t n);

/** loop0 and loop1 at once on two threads pinned to the first two allowed
 *  CPUs; each batch starts both together (a barrier) and is worth the mean
 *  of the two threads' ns per operation (thread_ns: each one's median).
 *  Throws if a loop fails. */
Sample time_two_threads(const Loop &loop0, const Loop &loop1, const TimingOptions &t);

/** CPUs this process may run on. */
int allowed_cpus();

/** Pins the calling thread to the index-th allowed CPU for its lifetime
 *  (restores the previous mask on destruction). */
class CpuPin {
public:
	explicit CpuPin(int index);
	~CpuPin();
	CpuPin(const CpuPin &) = delete;
	CpuPin &operator=(const CpuPin &) = delete;

private:
	bool restore_ = false;
	unsigned char saved_[128]; /* a cpu_set_t, opaque here */
};

/** Whether a thread that took `wall_ns` and used `cpu_ns` of CPU was
 *  descheduled meanwhile (wall beyond CPU by more than 2 % + 20 us). */
bool was_disturbed(std::uint64_t wall_ns, std::uint64_t cpu_ns) noexcept;

/** Keeps a checksum alive so the compiler cannot drop the loops. */
void consume(std::uint64_t checksum) noexcept;

} // namespace mrsync::bench

#endif
