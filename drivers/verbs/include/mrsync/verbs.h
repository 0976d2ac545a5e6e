/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The verbs driver: mrsync on any ibverbs device (docs/verbs.md).
 *
 * Pass a struct mrsync_verbs_params as mrsync_params.driver_arg with
 * driver = "verbs" (or NULL driver_arg: the driver opens $MRSYNC_VERBS_DEVICE
 * or the first device, with its own protection domain).
 *
 * A registration is one MR over the whole registered area. Where the device
 * can re-register in place (ibv_rereg_mr with IBV_REREG_MR_CHANGE_TRANSLATION)
 * a resync does that; where it cannot (Soft-RoCE), a resync registers a new MR
 * over the current pages and retires the old one: the keys change, and
 * mrsync_params.on_key_change and stats.key_changes say so.
 *
 * The fence. A retired MR may still be named by work requests the
 * application posted before the resync (to parts of the registration that
 * did not change): deregistering it under them would fail them. Only the
 * application sees its completion queues, so it tells the driver:
 *  - `quiesce`: called by the fence (under the cache's lock, from the thread
 *    that resyncs); returns once every work request posted before the call
 *    has completed. Retired MRs are then deregistered at once.
 *  - no `quiesce` (the default): retired MRs are kept, still pinning the old
 *    pages, until the application calls mrsync_verbs_quiesced() -- "every
 *    work request I posted before this call has completed" -- or destroys the
 *    context. Forgetting costs pinned memory (stats below), never a failed
 *    or misdirected work request.
 * Either way, work posted *after* a resync must use the keys mrsync_get()
 * returns then: an old key either fails (quiesced) or reaches old pages.
 *
 * Errors and struct sizes as in mrsync.h: -errno and mrsync_last_error();
 * struct_size and out_size may be an older header's.
 */
#ifndef MRSYNC_VERBS_H
#define MRSYNC_VERBS_H

#include <stddef.h>
#include <stdint.h>

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

struct ibv_pd;

struct mrsync_verbs_params {
	uint32_t struct_size;       /**< sizeof(struct mrsync_verbs_params) */
	uint32_t reserved;          /**< must be 0 */
	struct ibv_pd *pd;          /**< the PD to register in; NULL = own device + PD */
	const char *device;         /**< with pd NULL: device name; NULL = $MRSYNC_VERBS_DEVICE
				         or the first device */
	int (*quiesce)(void *arg);  /**< see above; 0 or -errno */
	void *quiesce_arg;
};

#define MRSYNC_VERBS_PARAMS_INIT {.struct_size = sizeof(struct mrsync_verbs_params)}

/** The application's word that every work request it posted before this
 *  call has completed: retired MRs are deregistered now. Any thread.
 *  @return how many were, -EINVAL (ctx NULL or not a verbs context). */
int mrsync_verbs_quiesced(struct mrsync_ctx *ctx);

struct mrsync_verbs_stats {
	uint64_t mrs;              /**< registration MRs live */
	uint64_t pin_mrs;          /**< MRs pinning backings */
	uint64_t retired_mrs;      /**< replaced MRs awaiting the fence's quiesce */
	uint64_t retired_bytes;
	uint64_t rereg;            /**< resyncs done with ibv_rereg_mr */
	uint64_t reg_dereg;        /**< resyncs done by register-new + deregister-old */
	uint32_t can_rereg;        /**< the device re-registers in place */
	uint32_t reserved;
};

/** Copies the driver's counters into out_size bytes of *out (as
 *  mrsync_get_stats()). Any thread.
 *  @return 0 or -EINVAL (ctx NULL or not a verbs context, out NULL,
 *          out_size below 8). */
int mrsync_verbs_get_stats(struct mrsync_ctx *ctx, struct mrsync_verbs_stats *out,
			   size_t out_size);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
