/* SPDX-License-Identifier: MIT */
/**
 * @file
 * libmrsync_ucx: mrsync's event sources under UCX's own registration caches
 * (ucs_rcache: UCT's IB, GPU and shared-memory caches, or one an application
 * creates), instead of UCX's libc hooks. UCX's documented way in
 * (ucm/api/ucm.h): declare UCM_EVENT_VM_UNMAPPED external, and call
 * ucm_vm_munmap() for every release of memory. A subscription
 * (mrsync/subscribe.h) does the calling; docs/integration.md has the recipe.
 *
 *   mrsync_ucx_external_events();               // before ucp_init/ucs_rcache_create
 *   mrsync_watcher_create(0, &w);
 *   mrsync_ucx_watch(w, buf, len, NULL);         // memory UCX will register
 *   ...
 *   mrsync_watcher_poll(w);                      // before each call that may look
 *   ucp_put_nbx(...);                            // the memory up in a UCX cache
 *
 * Tested with Debian's unmodified UCX 1.13 (test/bridges/ucx_rcache_test.cc).
 */
#ifndef MRSYNC_UCX_H
#define MRSYNC_UCX_H

#include <stddef.h>
#include <stdint.h>

#include <mrsync/subscribe.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/**
 * Declares UCM_EVENT_VM_UNMAPPED external (ucm_set_external_event()): UCX
 * then installs no munmap/mremap/madvise/shmdt hook for it and relies on
 * ucm_vm_munmap() calls. Must come before the UCX objects that subscribe to
 * the event (ucp_init(), ucs_rcache_create()); UCX keeps the choice for
 * handlers added later only. With UCX_MEM_EVENTS=no UCX 1.13 refuses every
 * handler, its caches included: turn the hooks off with
 * UCX_MEM_MMAP_HOOK_MODE=none and UCX_MEM_MALLOC_HOOKS=no instead.
 * Thread safety: any thread (UCX takes its event lock).
 */
void mrsync_ucx_external_events(void);

/** Undoes mrsync_ucx_external_events(). */
void mrsync_ucx_internal_events(void);

/**
 * A mrsync_change_fn that reports the change to UCX: ucm_vm_munmap() of
 * [change->start, change->end), which every UCX cache subscribed to
 * UCM_EVENT_VM_UNMAPPED receives (ucs_rcache invalidates the regions it
 * overlaps). Runs on the polling thread: poll where no UCX cache lock is
 * held (not from a UCX callback). `arg` is unused.
 */
void mrsync_ucx_on_change(void *arg, const struct mrsync_change *change);

/**
 * mrsync_subscribe(watcher, addr, len, mrsync_ucx_on_change, NULL, id).
 * @return as mrsync_subscribe(); mrsync_last_error() names the argument.
 */
int mrsync_ucx_watch(struct mrsync_watcher *watcher, const void *addr, size_t len,
		     uint64_t *id);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
