/* SPDX-License-Identifier: MIT */
/* Calls of an older ABI, kept for programs linked against it (their
 * references carry the old symbol version, or none: built against 0.1.0,
 * which had no versions, they bind to MRSYNC_0.1). Only in libmrsync.so:
 * test programs link the archives and see only the current calls. */
#include <cstddef>
#include <cstdint>

#include <mrsync/mrsync.h>

/* Each old call is a default-visibility function with a local name (the
 * version script exports no compat_*) and a versioned alias that is the
 * exported symbol. */

namespace {

/* The 0.1 stats calls had no size: the caller's struct was 0.1's. */
constexpr std::size_t kStatsSize_0_1 = offsetof(mrsync_stats, key_changes) + sizeof(std::uint64_t);

} // namespace

extern "C" {

[[gnu::visibility("default")]] int compat_get_stats_0_1(struct mrsync_ctx *ctx, struct mrsync_stats *out)
{
	return mrsync_get_stats(ctx, out, kStatsSize_0_1);
}
__asm__(".symver compat_get_stats_0_1, mrsync_get_stats@MRSYNC_0.1");

#ifdef MRSYNC_HAVE_VERBS
struct mrsync_verbs_stats;
int mrsync_verbs_get_stats(struct mrsync_ctx *ctx, struct mrsync_verbs_stats *out,
			   size_t out_size);

/* 0.1's struct mrsync_verbs_stats: six counters and two 32-bit words. */
[[gnu::visibility("default")]] int compat_verbs_get_stats_0_1(struct mrsync_ctx *ctx, struct mrsync_verbs_stats *out)
{
	return mrsync_verbs_get_stats(ctx, out, 7 * sizeof(std::uint64_t));
}
__asm__(".symver compat_verbs_get_stats_0_1, mrsync_verbs_get_stats@MRSYNC_0.1");
#endif

} // extern "C"
