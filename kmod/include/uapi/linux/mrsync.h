/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * mrsync: the ABI between the mrsync kernel module (/dev/mrsync) and user
 * space. This header is the only contract; docs/kmod.md describes it in prose.
 *
 * An open file of /dev/mrsync is bound to the address space (mm) of the
 * process that opened it. It watches ranges of that address space with one
 * mmu interval notifier each; when a watched range loses its pages (munmap,
 * mmap(MAP_FIXED) over it, madvise(MADV_DONTNEED), mremap, ...) the module
 * appends the changed part to an event ring and bumps a generation counter,
 * both before the call that changed the mapping returns. The ring and the
 * counter live in a read-only area that user space maps with mmap(2).
 *
 * Rules every structure follows: only __u64 fields (pointers too), sizes a
 * multiple of 8, a `flags` and padding that must be zero (else -EINVAL), and
 * every command from any mm other than the opener's fails with -EBADFD.
 */
#ifndef _UAPI_LINUX_MRSYNC_H
#define _UAPI_LINUX_MRSYNC_H

#include <linux/types.h>

/* Major.minor of this ABI: a client accepts a module whose major equals its
 * own and whose minor is at least the one it was built for. */
#define MRSYNC_ABI_MAJOR 1
#define MRSYNC_ABI_MINOR 2
#define MRSYNC_ABI_VERSION ((MRSYNC_ABI_MAJOR << 16) | MRSYNC_ABI_MINOR)

/* The first 8 bytes of the mapped area: "MRSYNC01" read as a little-endian
 * __u64 on the machines we run on. */
#define MRSYNC_MAGIC 0x3130434e5953524dULL

/* Ring sizes (entries): a power of two in [MIN, MAX]. */
#define MRSYNC_RING_DEFAULT 1024
#define MRSYNC_RING_MIN 1
#define MRSYNC_RING_MAX 65536

/**
 * struct mrsync_kmod_header - the start of the mapped area (read-only).
 * @magic:       MRSYNC_MAGIC.
 * @abi_version: MRSYNC_ABI_VERSION of the module.
 * @ring_offset: byte offset of entry 0 from the start of the area.
 * @entry_size:  sizeof(struct mrsync_kmod_event) as the module knows it.
 * @ring_size:   number of entries, a power of two; slot = index & (size - 1).
 * @map_size:    bytes to map (header page + entries, rounded up to pages).
 *
 * @generation:  bumped (store-release) after every recorded change of a
 *               watched range, after the entry (or the overflow count) it
 *               covers is published. Load it with acquire.
 * @head:        number of entries ever published (store-release).
 * @tail:        entries consumed so far, as told by MRSYNC_IOC_CONSUME.
 * @overflow:    changes that found the ring full (head - tail == ring_size)
 *               and so have no entry: when it moves, resync everything.
 *
 * The writer never overwrites an entry the reader has not consumed; a full
 * ring only bumps @overflow and @generation. Nothing is ever lost silently.
 */
struct mrsync_kmod_header {
	__u64 magic;
	__u64 abi_version;
	__u64 ring_offset;
	__u64 entry_size;
	__u64 ring_size;
	__u64 map_size;
	__u64 reserved0[2];
	/* written by the module: the generation alone on its 64-byte line (the
	 * hit path reads it), then the ring counters on the next */
	__u64 generation;
	__u64 reserved1[7];
	__u64 head;
	__u64 tail;
	__u64 overflow;
	__u64 reserved2[5];
};

/* Why an entry was recorded (struct mrsync_kmod_event.reason). */
enum mrsync_kmod_reason {
	MRSYNC_REASON_UNMAP = 0,     /* munmap, mremap moving the range away */
	MRSYNC_REASON_CLEAR = 1,     /* madvise(DONTNEED), MAP_FIXED over it, COW, ... */
	MRSYNC_REASON_RELEASE = 2,   /* the address space is going away (exit) */
	MRSYNC_REASON_MIGRATE = 3,   /* device-private migration */
	MRSYNC_REASON_EXCLUSIVE = 4, /* a device took exclusive access */
	MRSYNC_REASON_OTHER = 5,     /* anything newer than this header */
};

/**
 * struct mrsync_kmod_event - one ring entry (64 bytes).
 * @seq:    index + 1 of this entry once it is published; the reader of entry
 *          i loads @seq (acquire), checks it equals i + 1, copies the entry,
 *          and loads @seq again: a different value means a torn read.
 * @start:  first byte of the changed range, clipped to the watched range.
 * @end:    one past its last byte (page aligned, like @start).
 * @cookie: the cookie given to MRSYNC_IOC_WATCH.
 * @id:     the watch that saw it.
 * @reason: enum mrsync_kmod_reason.
 */
struct mrsync_kmod_event {
	__u64 seq;
	__u64 start;
	__u64 end;
	__u64 cookie;
	__u64 id;
	__u64 reason;
	__u64 reserved[2];
};

/**
 * struct mrsync_kmod_version - MRSYNC_IOC_VERSION, the handshake (all output).
 * @abi_version: MRSYNC_ABI_VERSION of the module.
 * @features:    MRSYNC_FEATURE_* bits.
 * @ring_offset, @entry_size: as in struct mrsync_kmod_header.
 * @ring_min, @ring_max: bounds of MRSYNC_IOC_SET_RING.
 * @max_watches: watches one file may hold (module parameter).
 */
struct mrsync_kmod_version {
	__u64 abi_version;
	__u64 features;
	__u64 ring_offset;
	__u64 entry_size;
	__u64 ring_min;
	__u64 ring_max;
	__u64 max_watches;
	__u64 reserved;
};

/* Features (struct mrsync_kmod_version.features). */
#define MRSYNC_FEATURE_CONSUME (1ULL << 0)    /* MRSYNC_IOC_CONSUME exists */
#define MRSYNC_FEATURE_READ_BEGIN (1ULL << 1) /* MRSYNC_IOC_READ_BEGIN exists (ABI 1.1) */
#define MRSYNC_FEATURE_POLL (1ULL << 2)       /* poll(2) on the file, MRSYNC_IOC_ACK (ABI 1.2) */

/**
 * struct mrsync_kmod_ring_config - MRSYNC_IOC_SET_RING (input).
 * @entries: ring size, a power of two in [MRSYNC_RING_MIN, MRSYNC_RING_MAX].
 * @flags:   0.
 * Only before the first MRSYNC_IOC_WATCH or mmap of the file.
 */
struct mrsync_kmod_ring_config {
	__u64 entries;
	__u64 flags;
};

/**
 * struct mrsync_kmod_watch - MRSYNC_IOC_WATCH.
 * @addr:   (in) start of the range, page aligned.
 * @len:    (in) its length, page aligned, not 0.
 * @cookie: (in) copied into every event of this watch.
 * @flags:  (in) 0.
 * @id:     (out) the watch, for MRSYNC_IOC_UNWATCH; never 0.
 * @reserved: (in) 0.
 * The range need not be mapped: a watch is on addresses, not on a mapping.
 */
struct mrsync_kmod_watch {
	__u64 addr;
	__u64 len;
	__u64 cookie;
	__u64 flags;
	__u64 id;
	__u64 reserved;
};

/**
 * struct mrsync_kmod_unwatch - MRSYNC_IOC_UNWATCH (input).
 * @id:    a watch of this file.
 * @flags: 0.
 * Returns once no invalidation of this watch is running; its events already
 * in the ring stay there.
 */
struct mrsync_kmod_unwatch {
	__u64 id;
	__u64 flags;
};

/**
 * struct mrsync_kmod_consume - MRSYNC_IOC_CONSUME (input).
 * @tail:  the reader has copied every entry below this index; between the
 *         current tail and the header's head (inclusive).
 * @flags: 0.
 */
struct mrsync_kmod_consume {
	__u64 tail;
	__u64 flags;
};

/**
 * struct mrsync_kmod_stats - MRSYNC_IOC_STATS (all output).
 * @watches:       live watches.
 * @invalidations: invalidate callbacks received (recorded or skipped).
 * @recorded:      entries published.
 * @skipped:       callbacks ignored because the pages stay (mprotect, ...).
 * @overflow:      changes that found the ring full.
 * @generation, @head, @tail, @ring_size: as in the header.
 */
struct mrsync_kmod_stats {
	__u64 watches;
	__u64 invalidations;
	__u64 recorded;
	__u64 skipped;
	__u64 overflow;
	__u64 generation;
	__u64 head;
	__u64 tail;
	__u64 ring_size;
	__u64 reserved[7];
};

/**
 * struct mrsync_kmod_read_begin - MRSYNC_IOC_READ_BEGIN (ABI 1.1).
 * @id:       (in) a watch of this file.
 * @flags:    (in) 0.
 * @seq:      (out) the sequence mmu_interval_read_begin() returned; opaque,
 *            for tracing only (no command takes it back).
 * @reserved: (in) 0.
 *
 * Returns once no invalidation of the watched interval is in progress: an
 * invalidation reported before the call (its event recorded, the generation
 * bumped) has finished by then, its pages are gone from the page tables,
 * and a page pinned afterwards is the one mapped after the change. The wait
 * is the kernel's (uninterruptible, as mmu_interval_read_begin's); it lasts
 * as long as the invalidations of the mm that are running when it starts.
 *
 * The protocol for pinning (get_user_pages, io_uring buffer registration,
 * ibv_reg_mr) memory of a watched range without ever keeping a page the
 * kernel is about to drop:
 *
 *   1. load the generation (acquire), g; drain the ring up to it;
 *   2. READ_BEGIN(id): every change of the watched range counted in g
 *      is complete;
 *   3. pin;
 *   4. load the generation again: if it is not g, a change may have started
 *      before or during the pin: drain, drop what it covers, pin again.
 *
 * This holds for the first pin of a new watch too (WATCH, then the steps):
 * a watch created while an invalidation of the mm is running counts as
 * invalidated by it (the kernel seeds its sequence so), and READ_BEGIN on
 * it waits for that invalidation, which its callback never saw.
 *
 * The order matters: g is loaded before READ_BEGIN. A change that bumps the
 * generation after READ_BEGIN returned may still be zapping pages while step
 * 3 runs; with g loaded before it, step 4 sees that bump. Loaded after it,
 * the bump could be in g and the stale pin would pass.
 *
 * Why there is no retry ioctl: step 4 is the read_retry half. The invalidate
 * callback calls mmu_interval_set_seq() and bumps the generation in one
 * critical section, before the invalidation changes any page table, for
 * every event that may change pages. An unchanged generation therefore
 * means that no such invalidation of any watch of the file began after g:
 * more than mmu_interval_read_retry() tells (one interval). It does not move
 * for events that keep the pages (mprotect, ...), after which the pin is
 * still right. And a retry ioctl's answer would be stale when it returns, while
 * the mapped generation is checked again, with one load, by every later
 * lookup.
 */
struct mrsync_kmod_read_begin {
	__u64 id;
	__u64 flags;
	__u64 seq;
	__u64 reserved;
};

/**
 * struct mrsync_kmod_ack - MRSYNC_IOC_ACK (input; ABI 1.2).
 * @generation: the reader has drained every change counted up to this
 *              generation; between the last acknowledged one and the
 *              header's generation (inclusive).
 * @flags:      0.
 *
 * poll(2), select(2) and epoll on the file (ABI 1.2, MRSYNC_FEATURE_POLL):
 * the file is readable (POLLIN | POLLRDNORM) while the header's generation
 * differs from the last acknowledged one (0 when none was), and the module
 * wakes its waiters from the invalidate callback, when the generation moves,
 * before the call that changed the mapping returns. A reader that sleeps in
 * poll instead of loading the generation:
 *
 *   1. load the generation (acquire), g;
 *   2. drain the ring (as above) and MRSYNC_IOC_CONSUME;
 *   3. MRSYNC_IOC_ACK(g).
 *
 * A change after step 1 moves the generation past g, so the file stays
 * readable: a wake-up may be spurious (the change was drained in step 2),
 * never missed. From another mm the file polls EPOLLERR. A reader that never
 * acknowledges (older user space) is unaffected: it never polls.
 */
struct mrsync_kmod_ack {
	__u64 generation;
	__u64 flags;
};

#define MRSYNC_IOC_MAGIC 0xB7

/*
 * Errors common to every command: -EBADFD (used from another mm: after
 * fork, exec, or a file passed over a socket), -EFAULT (bad argument
 * pointer), -EINVAL (non-zero flags or reserved field), -ENOTTY (unknown
 * command). Per command:
 *
 * VERSION:    never fails otherwise.
 * SET_RING:   -EINVAL entries not a power of two; -ERANGE outside
 *             [MRSYNC_RING_MIN, MRSYNC_RING_MAX]; -EBUSY after the first
 *             watch or mmap; -ENOMEM.
 * WATCH:      -EINVAL addr or len not page aligned; -ENODATA len is 0;
 *             -EOVERFLOW addr + len wraps; -ERANGE the range goes beyond the
 *             user address space (TASK_SIZE); -ENOSPC the file holds
 *             max_watches watches; -ENOMEM.
 * UNWATCH:    -ENOENT no such watch in this file.
 * CONSUME:    -ERANGE tail below the current tail or above head.
 * STATS:      never fails otherwise.
 * READ_BEGIN: -ENOENT no such watch in this file (id 0 included); -EINVAL
 *             flags or reserved non-zero (checked before the id).
 * ACK:        -ERANGE generation below the last acknowledged one or above
 *             the header's.
 *
 * mmap:       offset 0, length at most map_size; -EPERM with PROT_WRITE or
 *             PROT_EXEC (the area is read-only, mprotect cannot change that);
 *             -EINVAL other offset or length; -EBADFD from another mm. The
 *             mapping is not inherited by fork().
 */
#define MRSYNC_IOC_VERSION  _IOR(MRSYNC_IOC_MAGIC, 0x00, struct mrsync_kmod_version)
#define MRSYNC_IOC_SET_RING _IOW(MRSYNC_IOC_MAGIC, 0x01, struct mrsync_kmod_ring_config)
#define MRSYNC_IOC_WATCH    _IOWR(MRSYNC_IOC_MAGIC, 0x02, struct mrsync_kmod_watch)
#define MRSYNC_IOC_UNWATCH  _IOW(MRSYNC_IOC_MAGIC, 0x03, struct mrsync_kmod_unwatch)
#define MRSYNC_IOC_CONSUME  _IOW(MRSYNC_IOC_MAGIC, 0x04, struct mrsync_kmod_consume)
#define MRSYNC_IOC_STATS    _IOR(MRSYNC_IOC_MAGIC, 0x05, struct mrsync_kmod_stats)
#define MRSYNC_IOC_READ_BEGIN _IOWR(MRSYNC_IOC_MAGIC, 0x06, struct mrsync_kmod_read_begin)
#define MRSYNC_IOC_ACK      _IOW(MRSYNC_IOC_MAGIC, 0x07, struct mrsync_kmod_ack)

#endif /* _UAPI_LINUX_MRSYNC_H */
