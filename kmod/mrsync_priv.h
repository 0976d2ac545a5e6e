/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * mrsync module, private: the state of one open file and the functions the
 * three parts share (mrsync_dev.c: device, open/release, mmap;
 * mrsync_notifier.c: watches, the invalidate callback, the ring;
 * mrsync_ioctl.c: argument checking and dispatch).
 */
#ifndef MRSYNC_PRIV_H
#define MRSYNC_PRIV_H

#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include <linux/mrsync.h>

/*
 * The event ring: a vmalloc_user() area mapped read-only into the owner.
 * The module keeps its own copies of the counters and only ever writes the
 * mapped ones, so nothing it reads back can have been changed by user space.
 */
struct mrsync_ring {
	struct mrsync_kmod_header *hdr; /* start of the mapped area */
	struct mrsync_kmod_event *entries;
	u64 size;                       /* entries, a power of two */
	size_t map_size;
	/* under mrsync_file.lock */
	u64 head;
	u64 tail;
	u64 overflow;
	u64 generation;
	u64 acked;                      /* MRSYNC_IOC_ACK: poll is readable while != generation */
};

/*
 * One open file. Locks, outermost first:
 *   watch_lock  (mutex) id allocation + notifier insertion vs unwatch; held
 *               while mmu_interval_notifier_insert() takes mmap_lock, so it
 *               is never taken under mmap_lock. Also held by READ_BEGIN
 *               across mmu_interval_read_begin(), which sleeps until the
 *               invalidations running in the mm end: this keeps the watch
 *               node alive (unwatch erases it under this lock before freeing
 *               it), and is safe because nothing an invalidation waits for
 *               takes watch_lock (mrsync_watch_read_begin()).
 *   setup_lock  (mutex) ring size and `frozen`; taken under mmap_lock by
 *               mmap, so nothing that holds it may fault or take mmap_lock.
 *   lock        (spinlock) the ring and the counters; taken by the
 *               invalidate callback, which may not sleep: nothing allocates
 *               or touches user memory while holding it, nor waits for an
 *               invalidation (mmu_interval_read_begin()) with it held.
 *
 * Order: watch_lock -> mmap_lock -> (invalidate_range_start) -> lock, and
 * mmap_lock -> setup_lock -> lock.
 */
struct mrsync_file {
	struct mm_struct *mm;           /* the opener's, mmgrab()ed */

	struct mutex watch_lock;
	struct xarray watches;          /* id -> struct mrsync_watch_node */
	u32 next_id;                    /* for xa_alloc_cyclic() */
	u64 nwatches;                   /* written under watch_lock */

	struct mutex setup_lock;
	bool frozen;                    /* a watch or mmap happened: ring fixed */

	spinlock_t lock;
	struct mrsync_ring ring;        /* replaced only while !frozen */
	u64 invalidations;
	u64 recorded;
	u64 skipped;

	/* poll(2) waiters, woken by the invalidate callback (after `lock` is
	 * dropped) when the generation moves; the queue has its own lock. */
	wait_queue_head_t waitq;
};

/* A watched range: one mmu interval notifier on [start, end). */
struct mrsync_watch_node {
	struct mmu_interval_notifier mni;
	struct mrsync_file *file;
	u64 start;
	u64 end;
	u64 cookie;
	u64 id;
};

extern unsigned int mrsync_max_watches;

/* mrsync_notifier.c */
int mrsync_ring_alloc(struct mrsync_ring *ring, u64 entries);
void mrsync_ring_free(struct mrsync_ring *ring);
void mrsync_freeze(struct mrsync_file *f);
int mrsync_set_ring(struct mrsync_file *f, u64 entries);
int mrsync_watch_add(struct mrsync_file *f, u64 addr, u64 len, u64 cookie, u64 *id);
int mrsync_watch_remove(struct mrsync_file *f, u64 id);
int mrsync_watch_read_begin(struct mrsync_file *f, u64 id, u64 *seq);
void mrsync_watch_remove_all(struct mrsync_file *f);
int mrsync_consume(struct mrsync_file *f, u64 tail);
int mrsync_ack(struct mrsync_file *f, u64 generation);
bool mrsync_readable(struct mrsync_file *f);
void mrsync_get_stats(struct mrsync_file *f, struct mrsync_kmod_stats *st);

/* mrsync_ioctl.c */
long mrsync_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

/* -EBADFD unless the caller runs in the address space the file is bound to. */
static inline int mrsync_check_mm(const struct mrsync_file *f)
{
	return current->mm == f->mm ? 0 : -EBADFD;
}

#endif /* MRSYNC_PRIV_H */
