// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * mrsync: watches (one mmu interval notifier per watched range), the
 * invalidate callback and the event ring it appends to.
 *
 * The callback runs inside the invalidation, before the call that changes the
 * mapping returns, possibly where it may not sleep: it takes one spinlock,
 * writes one preallocated ring slot and bumps the generation. Invalidations
 * of unwatched addresses never reach this file: the interval tree of the mm
 * filters them out.
 */
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>

#include "mrsync_priv.h"

/* --- the ring ----------------------------------------------------------- */

int mrsync_ring_alloc(struct mrsync_ring *ring, u64 entries)
{
	size_t map_size = PAGE_SIZE + PAGE_ALIGN(entries * sizeof(struct mrsync_kmod_event));
	struct mrsync_kmod_header *hdr;

	BUILD_BUG_ON(sizeof(struct mrsync_kmod_header) > PAGE_SIZE);
	BUILD_BUG_ON(sizeof(struct mrsync_kmod_event) != 64);

	hdr = vmalloc_user(map_size); /* zeroed, page aligned, mappable */
	if (!hdr)
		return -ENOMEM;

	hdr->magic = MRSYNC_MAGIC;
	hdr->abi_version = MRSYNC_ABI_VERSION;
	hdr->ring_offset = PAGE_SIZE;
	hdr->entry_size = sizeof(struct mrsync_kmod_event);
	hdr->ring_size = entries;
	hdr->map_size = map_size;

	*ring = (struct mrsync_ring){
		.hdr = hdr,
		.entries = (struct mrsync_kmod_event *)((char *)hdr + PAGE_SIZE),
		.size = entries,
		.map_size = map_size,
	};
	return 0;
}

void mrsync_ring_free(struct mrsync_ring *ring)
{
	vfree(ring->hdr);
	ring->hdr = NULL;
	ring->entries = NULL;
}

/*
 * Appends one change, or counts it as overflow when the reader has not
 * consumed enough, then bumps the generation. Publication order, as the
 * reader relies on it: entry fields, entry seq, head (or overflow), then
 * generation, each store a release of everything before it.
 * Returns true if an entry was written.
 */
static bool mrsync_ring_record(struct mrsync_ring *ring, u64 start, u64 end, u64 cookie,
			       u64 id, u64 reason)
{
	struct mrsync_kmod_event *e;
	bool written = false;

	if (ring->head - ring->tail >= ring->size) {
		ring->overflow++;
		WRITE_ONCE(ring->hdr->overflow, ring->overflow);
	} else {
		e = &ring->entries[ring->head & (ring->size - 1)];
		/* the slot was consumed; mark it unpublished while it changes */
		WRITE_ONCE(e->seq, 0);
		smp_wmb();
		WRITE_ONCE(e->start, start);
		WRITE_ONCE(e->end, end);
		WRITE_ONCE(e->cookie, cookie);
		WRITE_ONCE(e->id, id);
		WRITE_ONCE(e->reason, reason);
		ring->head++;
		smp_store_release(&e->seq, ring->head);
		smp_store_release(&ring->hdr->head, ring->head);
		written = true;
	}
	ring->generation++;
	smp_store_release(&ring->hdr->generation, ring->generation);
	return written;
}

int mrsync_consume(struct mrsync_file *f, u64 tail)
{
	struct mrsync_ring *ring = &f->ring;
	int ret = 0;

	spin_lock(&f->lock);
	if (tail < ring->tail || tail > ring->head) {
		ret = -ERANGE;
	} else {
		ring->tail = tail;
		WRITE_ONCE(ring->hdr->tail, tail);
	}
	spin_unlock(&f->lock);
	return ret;
}

/* MRSYNC_IOC_ACK: the reader drained everything counted up to `generation`. */
int mrsync_ack(struct mrsync_file *f, u64 generation)
{
	struct mrsync_ring *ring = &f->ring;
	int ret = 0;

	spin_lock(&f->lock);
	if (generation < ring->acked || generation > ring->generation)
		ret = -ERANGE;
	else
		ring->acked = generation;
	spin_unlock(&f->lock);
	return ret;
}

/* poll: a change was recorded (or overflowed) that the reader has not
 * acknowledged. Under `lock`, so it pairs with the callback's bump. */
bool mrsync_readable(struct mrsync_file *f)
{
	bool readable;

	spin_lock(&f->lock);
	readable = f->ring.generation != f->ring.acked;
	spin_unlock(&f->lock);
	return readable;
}

void mrsync_get_stats(struct mrsync_file *f, struct mrsync_kmod_stats *st)
{
	spin_lock(&f->lock);
	st->invalidations = f->invalidations;
	st->recorded = f->recorded;
	st->skipped = f->skipped;
	st->overflow = f->ring.overflow;
	st->generation = f->ring.generation;
	st->head = f->ring.head;
	st->tail = f->ring.tail;
	st->ring_size = f->ring.size;
	spin_unlock(&f->lock);
	st->watches = READ_ONCE(f->nwatches);
}

/* Fixes the ring: called before the first watch and by mmap. */
void mrsync_freeze(struct mrsync_file *f)
{
	mutex_lock(&f->setup_lock);
	f->frozen = true;
	mutex_unlock(&f->setup_lock);
}

int mrsync_set_ring(struct mrsync_file *f, u64 entries)
{
	struct mrsync_ring fresh, old;
	int ret;

	mutex_lock(&f->setup_lock);
	if (f->frozen) {
		ret = -EBUSY;
		goto out_unlock;
	}
	ret = mrsync_ring_alloc(&fresh, entries);
	if (ret)
		goto out_unlock;
	/* no watch exists yet, so no callback can be using the old ring */
	spin_lock(&f->lock);
	old = f->ring;
	f->ring = fresh;
	spin_unlock(&f->lock);
	mrsync_ring_free(&old);
out_unlock:
	mutex_unlock(&f->setup_lock);
	return ret;
}

/* --- the invalidate callback ---------------------------------------------- */

/*
 * Events after which the range still maps the same pages: a registration
 * pinned on them stays correct, so they are not reported.
 *   PROTECTION_VMA   mprotect(), NUMA hinting faults
 *   PROTECTION_PAGE  write-protection for COW at fork, writeback (page_mkclean)
 *   SOFT_DIRTY       clearing soft-dirty bits (/proc/pid/clear_refs)
 * Everything else may replace or drop pages and is reported.
 */
static bool mrsync_keeps_pages(enum mmu_notifier_event event)
{
	switch (event) {
	case MMU_NOTIFY_PROTECTION_VMA:
	case MMU_NOTIFY_PROTECTION_PAGE:
	case MMU_NOTIFY_SOFT_DIRTY:
		return true;
	default:
		return false;
	}
}

static u64 mrsync_reason(enum mmu_notifier_event event)
{
	switch (event) {
	case MMU_NOTIFY_UNMAP:
		return MRSYNC_REASON_UNMAP;
	case MMU_NOTIFY_CLEAR:
		return MRSYNC_REASON_CLEAR;
	case MMU_NOTIFY_RELEASE:
		return MRSYNC_REASON_RELEASE;
	case MMU_NOTIFY_MIGRATE:
		return MRSYNC_REASON_MIGRATE;
	case MMU_NOTIFY_EXCLUSIVE:
		return MRSYNC_REASON_EXCLUSIVE;
	default:
		return MRSYNC_REASON_OTHER;
	}
}

/*
 * Records the change and bumps the generation before returning, then wakes
 * the file's poll waiters. Never sleeps (blockable or not): one spinlock, no
 * allocation, so it never has to return false.
 *
 * Where it runs: inside invalidate_range_start (mn_itree_invalidate()), in
 * process context -- the task changing the mapping, or a kernel thread
 * changing it for it (kswapd, khugepaged, the OOM reaper, migration) --
 * with mmap_lock or an rmap lock (i_mmap_rwsem, anon_vma) held, possibly
 * non-blockable (the OOM reaper), never in interrupt context. wake_up_poll()
 * is allowed there: it takes the queue's spinlock (irqsave) and calls the
 * waiters' wake functions (pollwake, ep_poll_callback), which take only
 * spinlocks and never sleep. It runs after `lock` is dropped, so `lock`
 * stays a leaf.
 */
static bool mrsync_invalidate(struct mmu_interval_notifier *mni,
			      const struct mmu_notifier_range *range, unsigned long cur_seq)
{
	struct mrsync_watch_node *w = container_of(mni, struct mrsync_watch_node, mni);
	struct mrsync_file *f = w->file;
	bool moved = false;

	spin_lock(&f->lock);
	mmu_interval_set_seq(mni, cur_seq);
	f->invalidations++;
	if (mrsync_keeps_pages(range->event)) {
		f->skipped++;
	} else {
		if (mrsync_ring_record(&f->ring, max_t(u64, range->start, w->start),
				       min_t(u64, range->end, w->end), w->cookie, w->id,
				       mrsync_reason(range->event)))
			f->recorded++;
		moved = true; /* recorded or overflowed: the generation moved */
	}
	spin_unlock(&f->lock);
	if (moved)
		wake_up_poll(&f->waitq, EPOLLIN | EPOLLRDNORM);
	return true;
}

static const struct mmu_interval_notifier_ops mrsync_mni_ops = {
	.invalidate = mrsync_invalidate,
};

/* --- watches ----------------------------------------------------------------- */

/* The range is validated by the caller, which runs in f->mm. */
int mrsync_watch_add(struct mrsync_file *f, u64 addr, u64 len, u64 cookie, u64 *id)
{
	struct mrsync_watch_node *w;
	u32 xid;
	int ret;

	mrsync_freeze(f);

	w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);
	if (!w)
		return -ENOMEM;
	w->file = f;
	w->start = addr;
	w->end = addr + len;
	w->cookie = cookie;

	mutex_lock(&f->watch_lock);
	if (f->nwatches >= READ_ONCE(mrsync_max_watches)) {
		ret = -ENOSPC;
		goto out_unlock;
	}
	ret = xa_alloc_cyclic(&f->watches, &xid, w, XA_LIMIT(1, U32_MAX), &f->next_id,
			      GFP_KERNEL_ACCOUNT);
	if (ret < 0)
		goto out_unlock;
	w->id = xid;
	ret = mmu_interval_notifier_insert(&w->mni, f->mm, addr, len, &mrsync_mni_ops);
	if (ret) {
		xa_erase(&f->watches, xid);
		goto out_unlock;
	}
	WRITE_ONCE(f->nwatches, f->nwatches + 1);
	mutex_unlock(&f->watch_lock);
	*id = xid;
	return 0;

out_unlock:
	mutex_unlock(&f->watch_lock);
	kfree(w);
	return ret;
}

/* Ids are xarray indices in [1, U32_MAX]; anything else names no watch. */
static bool mrsync_id_valid(u64 id)
{
	return id != 0 && id <= U32_MAX;
}

/* Returns once no invalidate callback of the watch is running. */
int mrsync_watch_remove(struct mrsync_file *f, u64 id)
{
	struct mrsync_watch_node *w = NULL;

	if (!mrsync_id_valid(id))
		return -ENOENT;

	mutex_lock(&f->watch_lock);
	w = xa_erase(&f->watches, id);
	if (w)
		WRITE_ONCE(f->nwatches, f->nwatches - 1);
	mutex_unlock(&f->watch_lock);
	if (!w)
		return -ENOENT;

	mmu_interval_notifier_remove(&w->mni); /* waits for a running callback */
	kfree(w);
	return 0;
}

/*
 * MRSYNC_IOC_READ_BEGIN: returns once no invalidation of the watch's interval
 * is in progress (mmu_interval_read_begin()), with the sequence it returned.
 *
 * The node must outlive the wait, which lasts as long as the invalidations of
 * the mm running when it starts (a whole munmap of a large range). Scheme:
 * watch_lock is held across the wait. UNWATCH erases the node from the
 * xarray under watch_lock before it removes and frees it, so it cannot take
 * the node from under us; release cannot run at all, since this ioctl holds
 * a reference to the file (and the file holds the mm).
 *
 * Sleeping with watch_lock held cannot deadlock, because nothing an
 * invalidation waits for takes watch_lock: the invalidate callback takes
 * only `lock`, and no path that holds mmap_lock, `lock` or is inside an
 * invalidation (reclaim included) takes watch_lock. The lock order stays
 * watch_lock -> mmap_lock -> invalidate_range_start -> lock: the lockdep
 * annotation in mmu_interval_read_begin() (it "acquires" the
 * invalidate_range_start map) adds watch_lock -> invalidate_range_start,
 * which that order already implies (mmu_interval_notifier_insert() takes
 * mmap_lock under watch_lock; munmap starts invalidations under mmap_lock).
 * `lock` must not be held here: the invalidate we wait for takes it.
 *
 * The price is that WATCH, UNWATCH and other READ_BEGINs of this file wait
 * for the invalidation too. They would mostly wait anyway: a concurrent
 * READ_BEGIN waits for the same mm-wide end of invalidations, UNWATCH of a
 * watch being invalidated waits for it in mmu_interval_notifier_remove(),
 * and lib/monitor calls all three under its context lock. A reference count
 * per node would let them pass at the cost of a get/put per call and a
 * deferred free shared by UNWATCH and release.
 */
int mrsync_watch_read_begin(struct mrsync_file *f, u64 id, u64 *seq)
{
	struct mrsync_watch_node *w;
	int ret = 0;

	if (!mrsync_id_valid(id))
		return -ENOENT;

	mutex_lock(&f->watch_lock);
	w = xa_load(&f->watches, id);
	if (w)
		*seq = mmu_interval_read_begin(&w->mni);
	else
		ret = -ENOENT;
	mutex_unlock(&f->watch_lock);
	return ret;
}

/* Last reference to the file is gone: no ioctl can run concurrently. */
void mrsync_watch_remove_all(struct mrsync_file *f)
{
	struct mrsync_watch_node *w;
	unsigned long id;

	xa_for_each(&f->watches, id, w) {
		xa_erase(&f->watches, id);
		mmu_interval_notifier_remove(&w->mni);
		kfree(w);
	}
	f->nwatches = 0;
}
