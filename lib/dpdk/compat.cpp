/* SPDX-License-Identifier: MIT */
/* Calls of libmrsync_dpdk's older ABI, for programs linked against 0.1.0
 * (see lib/core/compat.cpp for the rules). */
#include <mrsync/mrsync_dpdk.h>

namespace {

/* 0.1's struct mrsync_dpdk_stats: this release's counters, then the core's
 * (0.1's struct mrsync_stats, the same size as this one). */
struct dpdk_stats_0_1 {
	mrsync_dpdk_stats dpdk;
	mrsync_stats core;
};

} // namespace

extern "C" [[gnu::visibility("default")]] int compat_dpdk_get_stats_0_1(struct mrsync_dpdk *md,
									  void *raw)
{
	auto *out = static_cast<dpdk_stats_0_1 *>(raw);
	const int rc = mrsync_dpdk_get_stats(md, out ? &out->dpdk : nullptr, sizeof out->dpdk);
	if (rc < 0)
		return rc;
	return mrsync_get_stats(mrsync_dpdk_ctx(md), &out->core, sizeof out->core);
}
__asm__(".symver compat_dpdk_get_stats_0_1, mrsync_dpdk_get_stats@MRSYNC_DPDK_0.1");
