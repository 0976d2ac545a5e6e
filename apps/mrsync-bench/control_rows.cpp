/* SPDX-License-Identifier: MIT */
/* The control: about 200 register-only instructions per operation (no memory
 * at all), timed like the hit rows. Its 2-thread scaling is what the machine
 * itself allows: virtual CPUs that share a physical core on their host (or a
 * busy host) slow each other down even when they share nothing. */
#include "bench.hpp"
#include "loops.hpp"
#include "workload.hpp"

namespace mrsync::bench {

void run_control_rows(const Options &opts, Report &report)
{
	/* One region, a few lookups: the loop reads nothing of them. */
	const Workload w = make_workload(1, 4096, 16, 1, 2);
	(void)time_hit_rows(
		opts, report, w,
		[](const bench_access *, std::uint64_t s, std::uint64_t n) {
			return mrsync_bench_alu_loop(s, n);
		},
		HitRows{"alu_ns", "alu_2t_ns", "alu_scaling_2t",
			"control: 192 register-only adds (4 independent chains), no memory"});
}

} // namespace mrsync::bench
