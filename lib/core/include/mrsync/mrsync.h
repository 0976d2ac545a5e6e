/* SPDX-License-Identifier: MIT */
/**
 * @file
 * mrsync C ABI: a registration cache that never hands out a stale translation.
 *
 * Errors: every call of libmrsync (this header, mrsync/verbs.h) returns 0
 * (or a count) on success and a negative errno on failure;
 * mrsync_last_error() then gives a message naming the argument. errno is
 * not set. Unless said otherwise, calls are thread-safe.
 *
 * Structs and their sizes: a struct with a struct_size field (params), or a
 * call with a size argument (stats), may come from a program built against
 * an older or newer version of this header. New fields are only ever added
 * at the end.
 *  - Input (params): a smaller struct (an older header) is accepted, the
 *    fields it lacks read as 0, which is every field's default; a larger one
 *    is accepted if the bytes this library does not know are 0. A size below
 *    8 (struct_size and the field after it), or unknown bytes set, give
 *    -EINVAL naming the argument.
 *  - Output (stats): the library writes min(size, its own) bytes, never past
 *    `size`, and zeros where the caller's struct is longer than its own.
 *
 * ABI: libmrsync.so.0 (SONAME), symbols versioned MRSYNC_0.x. 0.x releases
 * may change the API; the SONAME and the symbol versions say when the ABI
 * changed. 0.2 changed mrsync_get_stats() (the size argument); programs
 * built against 0.1 keep the old call (mrsync_get_stats@MRSYNC_0.1).
 */
#ifndef MRSYNC_H
#define MRSYNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

/** A registration cache bound to one driver and its event sources. */
struct mrsync_ctx;
/** One cached registration (opaque). */
struct mrsync_region;

/** Rights a registration must grant (bitwise OR). */
enum mrsync_access {
	MRSYNC_ACCESS_LOCAL_WRITE = 1u << 0,
	MRSYNC_ACCESS_REMOTE_WRITE = 1u << 1,
	MRSYNC_ACCESS_REMOTE_READ = 1u << 2,
};
#define MRSYNC_ACCESS_ALL                                                              \
	(MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_WRITE | MRSYNC_ACCESS_REMOTE_READ)

/** Event sources (bitwise OR); 0 picks the kernel module when /dev/mrsync
 *  exists, else userfaultfd. Memory is served only if one source of the
 *  context sees every change of it: the module sees everything; userfaultfd
 *  private anonymous memory only (and misses two cases, see docs/design.md,
 *  "What userfaultfd cannot see"); DPDK the EAL's memseg lists; the manual
 *  source whatever the application reports. */
enum mrsync_source_kind {
	MRSYNC_SOURCE_KMOD = 1u << 0,   /**< /dev/mrsync mmu notifiers */
	MRSYNC_SOURCE_UFFD = 1u << 1,   /**< userfaultfd monitor thread */
	MRSYNC_SOURCE_MANUAL = 1u << 2, /**< mrsync_notify_unmap() */
	/** DPDK memory events (hugepage ALLOC/FREE); provided by libmrsync_dpdk,
	 *  usable once that library is loaded and the EAL is initialised. */
	MRSYNC_SOURCE_DPDK = 1u << 3,
};

/** What the cache tells the application when a driver could not keep a
 *  registration's keys (DriverCaps::keys_survive_map is false) across a
 *  device map -- a resync's invalidation, or the re-pin of a later lookup:
 *  its peers must be told the new rkey. */
struct mrsync_key_change {
	uint64_t addr;     /**< start of the registered area */
	uint64_t length;   /**< its length */
	uint32_t old_lkey, old_rkey;
	uint32_t new_lkey, new_rkey;
};

/** Called under the context lock, on the thread whose resync or lookup
 *  mapped the registration: it must not call back into this context (queue
 *  the change and act on it later). */
typedef void (*mrsync_key_change_fn)(void *arg, const struct mrsync_key_change *change);

enum mrsync_ctx_flags {
	/** TEST ONLY: the hit path ignores generations, turning mrsync into a
	 *  naive address-keyed cache. Exists so tests can prove they fail. */
	MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK = 1u << 0,
	/* 1u << 1 is taken by a test-only flag that libmrsync.so refuses
	 * (mrsync/testing.h in the source tree, not installed). */
};

struct mrsync_params {
	uint32_t struct_size;           /**< sizeof(struct mrsync_params), see "Structs and
					     their sizes" */
	uint32_t sources;               /**< MRSYNC_SOURCE_* mask; 0 = automatic */
	const char *driver;             /**< driver name; NULL = "uring" */
	uint64_t entry_size;            /**< translation entry size: a power of two >= the
					     page size; 0 = the driver's granularity */
	uint64_t max_registered_bytes;  /**< LRU-evict past this; 0 = unlimited */
	uint32_t max_regions;           /**< LRU-evict past this; 0 = 4096 */
	uint32_t flags;                 /**< MRSYNC_CTX_F_* */
	uint64_t compact_threshold;     /**< compact when stale pinned bytes exceed this;
					     0 = 64 MiB, UINT64_MAX = only on request */
	uint32_t ring_entries;          /**< event ring size per source; 0 = 1024 */
	uint32_t reserved;              /**< must be 0 */
	const void *driver_arg;         /**< driver-specific, see the driver's header
					     (verbs: a struct ibv_pd * to register in);
					     NULL = the driver's default */
	mrsync_key_change_fn on_key_change; /**< NULL = keys changes only counted */
	void *on_key_change_arg;        /**< passed to on_key_change */
};

/** Initialises params to the defaults. */
#define MRSYNC_PARAMS_INIT {.struct_size = sizeof(struct mrsync_params)}

/** A registration handed out by mrsync_get(). */
struct mrsync_reg {
	uint64_t addr;                 /**< start of the registered area */
	uint64_t length;               /**< its length (covers the request) */
	uint32_t lkey;                 /**< local key */
	uint32_t rkey;                 /**< remote key */
	struct mrsync_region *region;  /**< pass to mrsync_put() */
};

struct mrsync_stats {
	uint64_t hits;                  /**< lookups served by the hit path */
	uint64_t misses;                /**< lookups that took the slow path */
	uint64_t resyncs;               /**< resync passes */
	uint64_t full_resyncs;          /**< passes that redid everything (ring overflow, fork) */
	uint64_t events;                /**< ranges drained from the sources */
	uint64_t entries_repinned;      /**< translation entries pointed at new pages */
	uint64_t bytes_repinned;
	uint64_t entries_invalidated;   /**< entries left invalid (unmapped, not remapped) */
	uint64_t regions;               /**< live registrations */
	uint64_t registered_bytes;      /**< bytes they cover */
	uint64_t pinned_bytes;          /**< bytes pinned by their backings */
	uint64_t stale_pinned_bytes;    /**< pinned bytes no entry uses (awaiting compaction) */
	uint64_t invalid_bytes;         /**< registered bytes with no valid translation */
	uint64_t registrations;         /**< device registrations created */
	uint64_t evictions;             /**< registrations evicted by the LRU */
	uint64_t compactions;           /**< backings re-pinned to drop stale bytes */
	uint64_t key_changes;           /**< resyncs that changed a key */
};

/**
 * Creates a context.
 * @param params NULL for defaults, else initialised with MRSYNC_PARAMS_INIT.
 * @param out    receives the context.
 * @return 0, -EINVAL (a field is invalid; the message names it), -ENODEV (the
 *         driver or a requested source is unavailable), -ENOMEM.
 */
int mrsync_ctx_create(const struct mrsync_params *params, struct mrsync_ctx **out);

/** Destroys a context and every registration; sets *ctx to NULL.
 *  No other call on the context may be running. */
void mrsync_ctx_destroy(struct mrsync_ctx **ctx);

/**
 * Returns a registration covering [addr, addr + len) with at least `access`.
 * The hit path checks each source's generation and reads the cache without a
 * lock, an atomic read-modify-write or an allocation. The registration stays
 * valid (keys, translation of the range) until mrsync_put().
 * Pages of the range that changed are pinned again, after the change has
 * completed where the source can tell (the module, DPDK).
 * @return 0; -EINVAL (NULL or zero-length or wrapping range, unknown access bits),
 *         -EFAULT (part of the range is not mapped), -ENOTSUP (no event source
 *         of the context can see every change of that memory, e.g. a shared
 *         mapping with the userfaultfd source: the message names it),
 *         -EBUSY (userfaultfd source: another userfaultfd -- another context
 *         or library -- already watches that memory), -EAGAIN
 *         (userfaultfd source: the range kept being replaced, faster than
 *         it could be armed and proven armed; try again), -ENOMEM
 *         (RLIMIT_MEMLOCK), -ENOSPC (limits reached and every registration
 *         in use).
 */
int mrsync_get(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access,
	       struct mrsync_reg *out);

/** Releases a registration from mrsync_get(); may be called from any thread.
 *  @return 0 or -EINVAL (reg is NULL or was not handed out by this context). */
int mrsync_put(struct mrsync_ctx *ctx, struct mrsync_reg *reg);

/**
 * Caches [addr, addr + len) in one registration now, so later mrsync_get()
 * calls anywhere inside it hit (the "whole area" hint). A hint never pins a
 * page that changed since it was cached (it may be changing right now): such
 * pages stay invalid until a mrsync_get() that covers them.
 * @return 0 or the errors of mrsync_get().
 */
int mrsync_hint(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access);

/**
 * Tells the manual source that [addr, addr + len) was unmapped or remapped.
 * @return 0; -EINVAL (bad range); -ENOTSUP (the context has no manual source).
 */
int mrsync_notify_unmap(struct mrsync_ctx *ctx, const void *addr, size_t len);

/**
 * The sum of the context's source generations (one acquire load each, no
 * lock, no write). It changes whenever a source reports a change, so a cache
 * the caller keeps in front of mrsync_get() (a per-lcore mbuf -> key cache)
 * stays correct with this rule: read the generation *before* mrsync_get(),
 * keep the result while mrsync_generation() still returns that value, drop
 * it (mrsync_put) once it moved. Keys taken under an old value may still be
 * the current ones, but only mrsync_get() can say.
 * @return the generation; 0 for a NULL context.
 */
uint64_t mrsync_generation(const struct mrsync_ctx *ctx);

/**
 * The words mrsync_generation() sums, for a caller that inlines the check in
 * its own hot path (libmrsync_dpdk's per-lcore cache): mrsync_gen_begin() and
 * mrsync_gen_retry() (<mrsync/generation.h>). The last one is the context's
 * own: it moves when the set of words changes (a fork child rebuilding), so
 * fetch the words again whenever their sum moved. Readable while the context
 * lives. Takes the context lock.
 * @return how many (at most `max`) were stored, or -EINVAL.
 */
int mrsync_generation_words(const struct mrsync_ctx *ctx, const uint64_t **words, int max);

/** One live registration, as mrsync_for_each_region() reports it. */
struct mrsync_region_info {
	uint64_t addr;            /**< start of the registered area */
	uint64_t length;          /**< its length */
	uint32_t lkey, rkey;
	uint32_t access;          /**< MRSYNC_ACCESS_* it grants */
	uint32_t reserved;
	uint64_t invalid_bytes;   /**< bytes with no valid translation (awaiting a lookup) */
};

/**
 * Calls fn for every live registration, under the context lock: fn must not
 * call into this context. For diagnostics (telemetry, debugging).
 * @return the number of registrations reported, or -EINVAL.
 */
int mrsync_for_each_region(struct mrsync_ctx *ctx,
			   void (*fn)(void *arg, const struct mrsync_region_info *info),
			   void *arg);

/** Resyncs now if any source moved (otherwise the next mrsync_get() does). */
int mrsync_resync(struct mrsync_ctx *ctx);

/** Re-pins backings that hold stale pages, whatever the threshold.
 *  @return the number of backings compacted, or -errno. */
int mrsync_compact(struct mrsync_ctx *ctx);

/**
 * Copies the counters into *out, out_size bytes of it (see "Structs and
 * their sizes"). Thread-safe; takes the context lock briefly.
 * @param out_size sizeof(struct mrsync_stats) as the caller was built.
 * @return 0, or -EINVAL (ctx or out NULL, out_size below 8; the message names
 *         the argument).
 */
int mrsync_get_stats(struct mrsync_ctx *ctx, struct mrsync_stats *out, size_t out_size);

/** The message of this thread's last failed call ("" if none). */
const char *mrsync_last_error(void);

/** The driver's name ("uring", ...), or NULL for a NULL context. */
const char *mrsync_driver_name(const struct mrsync_ctx *ctx);

/** Levels of the log, as MRSYNC_LOG=error|warning|info|debug names them. */
enum mrsync_log_level {
	MRSYNC_LOG_LEVEL_ERROR = 0,
	MRSYNC_LOG_LEVEL_WARNING = 1,
	MRSYNC_LOG_LEVEL_INFO = 2,
	MRSYNC_LOG_LEVEL_DEBUG = 3,
};

/**
 * Receives one log line.
 * @param level     an enum mrsync_log_level
 * @param component "core", "uffd", "kmod", "verbs", "log", ...
 * @param message   "function: text", without a trailing newline; valid
 *                  during the call only
 * @param arg       the arg given to mrsync_set_log_sink()
 * Thread safety: called from any thread, including the userfaultfd monitor
 * thread and threads inside mrsync_get() holding a context's lock, possibly
 * from several at once. It must not call any mrsync_* function (that may
 * deadlock), and should return quickly.
 */
typedef void (*mrsync_log_fn)(int level, const char *component, const char *message,
			      void *arg);

/**
 * Sends mrsync's log lines to fn instead of stderr (fn NULL: stderr again).
 * Lines are filtered by MRSYNC_LOG first (default warning); an unknown
 * MRSYNC_LOG value is reported once, to the sink in place when it is first
 * read (at the latest, this call). libmrsync_dpdk installs an rte_log sink
 * at mrsync_dpdk_attach() and restores the previous one at detach.
 * Thread-safe, not from inside a sink. When it returns, no call to the
 * previous sink is running or will start: its arg may be freed.
 * @return 0.
 */
int mrsync_set_log_sink(mrsync_log_fn fn, void *arg);

/** The sink in place (*fn NULL: stderr) and its arg, to restore it later;
 *  either pointer may be NULL. Thread-safe. */
void mrsync_get_log_sink(mrsync_log_fn *fn, void **arg);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
