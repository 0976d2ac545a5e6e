/* SPDX-License-Identifier: MIT */
/**
 * @file
 * Subscriptions: "tell me when any part of [addr, addr + len) changes", on
 * the event sources the cache uses (the kernel module, userfaultfd, DPDK
 * memory events, the application's own reports), for caches that are not
 * mrsync's: UCX's rcache (lib/ucx), libfabric's MR cache (lib/ofi), a
 * dataplane's own. docs/integration.md shows them in use.
 *
 * A watcher made by mrsync_watcher_create() owns its own sources (one
 * userfaultfd, one /dev/mrsync file...). The watcher of a context
 * (mrsync_ctx_watcher()) shares the context's: a process that both caches
 * and subscribes watches each mapping once (userfaultfd allows one
 * userfaultfd per mapping), and a change reaches both, whichever of the
 * poll and the cache's resync drains it first. Subscriptions watch, they
 * never pin: memory under a subscription can be unmapped, remapped and
 * freed as usual.
 *
 * The guarantee is the cache's: every source moves its generation *before*
 * the unmapping call (munmap, mremap, madvise(MADV_DONTNEED), mmap(MAP_FIXED)
 * over the range, rte_free) returns, and mrsync_watcher_poll() waits for the
 * ranges of a moved generation. So a poll made after the change returned --
 * on any thread that is ordered after it -- delivers it. That is what makes
 * a foreign cache correct: poll before each lookup (the poll costs one load
 * per source when nothing changed). No source runs user code inside the
 * unmapping call itself: the module appends to a ring in its mmu notifier,
 * userfaultfd wakes the unmapping thread the moment its monitor reads the
 * event. A callback therefore always runs in a poll, on the polling thread.
 *
 * What a source cannot see a subscription cannot see either: with
 * userfaultfd, private anonymous memory only (mrsync_subscribe() refuses the
 * rest with -ENOTSUP), and no event for shmdt()/shmat(SHM_REMAP);
 * docs/design.md, "What userfaultfd cannot see". With userfaultfd a
 * subscription also covers only what is mapped: a range unmapped and mapped
 * again is watched again from the next poll that finds it mapped.
 *
 * Ordering: one poll delivers, per subscription, each changed part once
 * (overlapping reports merged, in address order), subscriptions in the order
 * they were made. A change is delivered by exactly one poll.
 *
 * Threading and reentrancy: every call is thread-safe; polls are serialised
 * (a second poller waits). A callback runs on the polling thread, with no
 * lock of the watcher held, and may call mrsync_subscribe() and
 * mrsync_unsubscribe() on the same watcher (its own subscription included),
 * but not mrsync_watcher_poll() (-EDEADLK) or mrsync_watcher_destroy().
 * Once mrsync_unsubscribe() returns, no callback of that subscription runs
 * or will start (a poll on another thread is waited for). A fork child must
 * not use its parent's watcher: the sources drop themselves in the child.
 *
 * Sleeping instead of polling: mrsync_watcher_fd() gives one fd, whatever the
 * sources, that polls readable when a poll would have something to deliver
 * (each source signals it where it reports: the module's notifier, the
 * userfaultfd monitor thread, mrsync_watcher_notify_unmap(), DPDK's memory
 * callback). Put it in epoll/poll/select or an io_uring poll, and call
 * mrsync_watcher_poll() when it is readable; docs/integration.md has an epoll
 * loop.
 *
 * Errors as in mrsync.h: 0 or a count on success, a negative errno on
 * failure, mrsync_last_error() names the argument.
 */
#ifndef MRSYNC_SUBSCRIBE_H
#define MRSYNC_SUBSCRIBE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/** A set of event sources and the subscriptions fed from them (opaque). */
struct mrsync_watcher;
struct mrsync_ctx; /* mrsync.h */

enum mrsync_change_flags {
	/** A source lost events (its ring overflowed): the whole subscription
	 *  is reported as changed. */
	MRSYNC_CHANGE_F_OVERFLOW = 1u << 0,
};

/** One changed part of a subscription. */
struct mrsync_change {
	uint64_t start;        /**< page-aligned, inside the subscription */
	uint64_t end;          /**< exclusive */
	uint64_t subscription; /**< the id mrsync_subscribe() returned */
	uint32_t flags;        /**< MRSYNC_CHANGE_F_* */
	uint32_t reserved;     /**< 0 */
};

/** Called by mrsync_watcher_poll(), on the polling thread; see the
 *  reentrancy rules above. `change` is valid during the call only. */
typedef void (*mrsync_change_fn)(void *arg, const struct mrsync_change *change);

/**
 * Creates a watcher.
 * @param sources MRSYNC_SOURCE_* (mrsync.h); 0 picks the kernel module when
 *                /dev/mrsync exists, else userfaultfd.
 * @param out     receives the watcher.
 * @return 0, -EINVAL (out NULL, unknown source bits), -ENODEV (a requested
 *         source is unavailable: the message says why), -ENOMEM.
 * Thread safety: any thread.
 */
int mrsync_watcher_create(uint32_t sources, struct mrsync_watcher **out);

/**
 * The watcher of a context: subscriptions on the context's own event
 * sources (the same module file, userfaultfd, DPDK source and manual source
 * as its cache), so memory the cache registers can be subscribed too.
 *  - Borrowed: the context owns it. It is made at the first call (the same
 *    one on every later call) and lives until mrsync_ctx_destroy(), which
 *    ends its subscriptions; mrsync_watcher_destroy() on it only sets the
 *    caller's pointer to NULL. No call on it may run during
 *    mrsync_ctx_destroy().
 *  - Every mrsync_watcher_* call works on it as on a watcher of its own,
 *    mrsync_watcher_fd() and mrsync_watcher_notify_unmap() (the context's
 *    manual source, as mrsync_notify_unmap()) included.
 *  - Nothing is lost between the two consumers: a change a poll delivers
 *    is still applied by the cache's next lookup, and one the cache
 *    resynced first is still delivered by the next poll.
 *  - Locks: a poll takes the sources' lock for its drain, as a lookup's
 *    resync does; callbacks still run with no lock held, and may call
 *    mrsync_get()/mrsync_put() on the context.
 *  - Fork: a child must not use the parent's watcher; in the child this
 *    call returns a new one, on the child's sources.
 * @param ctx the context.
 * @param out receives the watcher.
 * @return 0; -EINVAL (ctx or out NULL); -ENOMEM; a fork child's errors
 *         rebuilding the context (as mrsync_resync()).
 * Thread safety: any thread, but not a callback of that watcher.
 */
int mrsync_ctx_watcher(struct mrsync_ctx *ctx, struct mrsync_watcher **out);

/** Stops every source and frees the watcher; sets *watcher to NULL. No other
 *  call on the watcher may be running. A context's watcher
 *  (mrsync_ctx_watcher()) is left to its context: only *watcher is cleared. */
void mrsync_watcher_destroy(struct mrsync_watcher **watcher);

/**
 * Subscribes to changes of [addr, addr + len), rounded out to pages.
 * @param id receives the subscription's id (never 0); may be NULL.
 * With the kernel module the range may include holes (it watches
 * addresses, whatever is mapped there); userfaultfd watches mappings.
 * @return 0; -EINVAL (watcher, fn NULL; len 0; the range wraps), -EFAULT
 *         (userfaultfd: part of it is not mapped), -ENOTSUP (no source of the watcher
 *         can see every change of that memory: the message names it),
 *         -EBUSY (userfaultfd: another userfaultfd already watches it),
 *         -ENOMEM.
 * Thread safety: any thread, a callback of this watcher included.
 */
int mrsync_subscribe(struct mrsync_watcher *watcher, const void *addr, size_t len,
		     mrsync_change_fn fn, void *arg, uint64_t *id);

/**
 * Ends a subscription. When it returns, no callback of it runs or will start.
 * @return 0, -EINVAL (watcher NULL), -ENOENT (no such subscription).
 * Thread safety: any thread, a callback of this watcher included.
 */
int mrsync_unsubscribe(struct mrsync_watcher *watcher, uint64_t id);

/**
 * Delivers every change reported since the last poll to the subscriptions
 * it touches, and watches again what userfaultfd stopped watching (memory
 * mapped anew where a subscription's was unmapped).
 * @return the number of callbacks made; -EINVAL (watcher NULL), -EDEADLK
 *         (called from one of this watcher's callbacks).
 * Thread safety: any thread; polls are serialised.
 */
int mrsync_watcher_poll(struct mrsync_watcher *watcher);

/**
 * Tells the watcher's manual source that [addr, addr + len) was unmapped or
 * remapped (the application's own report, as mrsync_notify_unmap()).
 * @return 0, -EINVAL (bad range), -ENOTSUP (no manual source).
 */
int mrsync_watcher_notify_unmap(struct mrsync_watcher *watcher, const void *addr, size_t len);

/**
 * A file descriptor that polls readable (POLLIN) when mrsync_watcher_poll()
 * may have something to deliver: an epoll set over the sources' own fds,
 * level-triggered, and an eventfd set when another consumer of the same
 * sources (the context's resync, for mrsync_ctx_watcher()) drained a change
 * first.
 *  - Never missed: a change reported after a poll began draining leaves the
 *    fd readable, so sleeping until it is readable and then polling misses
 *    no change, on any thread.
 *  - May be spurious: readable once right after this call, after a change
 *    the last poll already delivered, or after one outside every
 *    subscription (userfaultfd watches whole mappings); the poll then
 *    returns 0. It is cleared by mrsync_watcher_poll(), nothing else: do not
 *    read from it.
 *  - From the first call on, every mrsync_watcher_poll() drains the sources
 *    (one read() per user-space source) instead of returning after one load
 *    per source when nothing moved.
 *  - userfaultfd: a subscription whose memory was unmapped is watched again
 *    by the first poll that finds it mapped (above); memory mapped anew there
 *    makes the fd readable only once it changes after that poll. A program
 *    that maps over such a range itself polls after mapping.
 * The fd belongs to the watcher: do not close it; mrsync_watcher_destroy()
 * does (remove it from your epoll set first). The same fd on every call.
 * @param watcher the watcher.
 * @param fd      receives the descriptor.
 * @return 0; -EINVAL (watcher or fd NULL); -ENOTSUP (a source cannot signal
 *         one, e.g. a kernel module older than ABI 1.2: the message names
 *         it); -EMFILE, -ENOMEM.
 * Thread safety: any thread; waits for nothing but the watcher's lock.
 */
int mrsync_watcher_fd(struct mrsync_watcher *watcher, int *fd);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
