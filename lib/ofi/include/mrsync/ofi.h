/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libmrsync_ofi: mrsync's event sources as libfabric's memory monitor, so
 * the providers' MR caches (ofi_mr_cache) learn every unmap from the same
 * sources as mrsync's own cache instead of memhooks or userfaultfd of their
 * own. libfabric's way in (rdma/fi_ext.h, libfabric >= 1.13): a
 * struct fid_mem_monitor imported into the "mr_cache" fid, which makes it the
 * default monitor of every cache opened afterwards. docs/integration.md has
 * the recipe.
 *
 * How it answers libfabric: subscribe/unsubscribe are subscriptions
 * (mrsync/subscribe.h) of the registered ranges; valid(), which libfabric
 * asks on every cache hit, polls the watcher and says false for an entry
 * whose memory changed since it was registered: the cache drops it and
 * registers the memory again. Nothing is pinned here.
 *
 * Thread safety: libfabric calls the monitor under its own lock (mm_lock);
 * the calls below are for one thread at a time, before the first domain is
 * opened (import) and after the last is closed (close).
 */
#ifndef MRSYNC_OFI_H
#define MRSYNC_OFI_H

#include <stdint.h>

#include <mrsync/subscribe.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/** The imported monitor (opaque). */
struct mrsync_ofi_monitor;

/** What libfabric asked of it. */
struct mrsync_ofi_stats {
	uint64_t subscribes;   /**< ranges libfabric's caches registered */
	uint64_t unsubscribes; /**< ranges they dropped */
	uint64_t valid_calls;  /**< cache hits checked */
	uint64_t invalidated;  /**< hits refused: the memory changed */
};

/**
 * Makes a monitor fed by `watcher` libfabric's default memory monitor
 * (fi_open("mr_cache") + fi_import_fid()). Call it before opening any
 * domain whose MR cache should use it; FI_MR_CACHE_MONITOR must not be
 * "disabled". The watcher must outlive the monitor.
 * @return 0; -EINVAL (watcher or out NULL), -EBUSY (libfabric already has
 *         an imported monitor, or its default one is in use), another
 *         negative errno from libfabric; mrsync_ofi_last_error() says which.
 */
int mrsync_ofi_monitor_import(struct mrsync_watcher *watcher, struct mrsync_ofi_monitor **out);

/** Detaches the monitor from libfabric (fi_close) and frees it; sets *monitor
 *  to NULL. Only once every domain that used it is closed. */
void mrsync_ofi_monitor_close(struct mrsync_ofi_monitor **monitor);

/** Copies the counters. @return 0, or -EINVAL (a NULL argument). */
int mrsync_ofi_monitor_stats(const struct mrsync_ofi_monitor *monitor,
			     struct mrsync_ofi_stats *out);

/** The message of this thread's last failed call of this header ("" if none). */
const char *mrsync_ofi_last_error(void);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
