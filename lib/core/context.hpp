/* SPDX-License-Identifier: MIT */
/* Private. The registration cache: one context = one driver, its event
 * sources, the page table the hit path reads and the regions it points to.
 *
 * Locking: the hit path (get_fast) takes no lock. Everything else runs under
 * `lock_`: the slow path of get, resync, eviction, compaction, stats. */
#ifndef MRSYNC_CONTEXT_HPP
#define MRSYNC_CONTEXT_HPP

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/generation.h>
#include <mrsync/mrsync.h>
#include <mrsync/mru.h>
#include <mrsync/source.hpp>

#include "backings.hpp"
#include "range_set.hpp"
#include "region.hpp"
#include "source_hub.hpp"
#include "thread_state.hpp"
#include "updater.hpp"
#include "va_table.hpp"

namespace mrsync::detail {

class Watcher; /* subscription.hpp */

inline constexpr std::uint32_t kMaxSources = 4;

/* What the context asks of every source it opens (also after fork). */
SourceConfig source_config(const mrsync_params &params);
/* Whether the context's hub fans drains out (off: MRSYNC_CTX_F_TEST_NO_FANOUT). */
SourceHub::Fanout fanout_of(const mrsync_params &params);

/* The driver called `name` ("uring" when null), if usable here. */
Result<std::unique_ptr<Driver>> open_driver(const char *name, std::uint64_t entry_size,
					     const void *arg);

/* The sources of `mask` (MRSYNC_SOURCE_*); 0 picks the kernel module when
 * its device exists, userfaultfd otherwise, and says which in `mask`. */
Result<std::vector<std::unique_ptr<EventSource>>> open_sources(std::uint32_t &mask,
							       const SourceConfig &config);

/* open_sources() behind one hub, which the context (and its watcher) or a
 * watcher of its own consumes. */
Result<std::shared_ptr<SourceHub>> open_hub(std::uint32_t &mask, const SourceConfig &config,
					    SourceHub::Fanout fanout);

/* Counters the slow path keeps under the context lock. */
struct SlowStats {
	std::uint64_t misses = 0, resyncs = 0, full_resyncs = 0, events = 0;
	std::uint64_t entries_repinned = 0, bytes_repinned = 0, entries_invalidated = 0;
	std::uint64_t registrations = 0, evictions = 0, compactions = 0, key_changes = 0;
};

class Context {
public:
	static Result<std::unique_ptr<Context>> create(const mrsync_params &params);
	~Context();
	Context(const Context &) = delete;
	Context &operator=(const Context &) = delete;

	/** The hit path: generations, then the page table, then a hold. Returns
	 *  false when the slow path must decide (never an error by itself). */
	template <bool kFillMru = false>
	[[gnu::always_inline]] bool get_fast(std::uint64_t addr, std::uint64_t len,
					     std::uint32_t access, mrsync_reg &out) noexcept
	{
		/* Before anything is looked at: an entry kept for this thread
		 * (mrsync/mru.h) is good only while nothing moved it since. */
		const std::uint64_t epoch =
			kFillMru ? __atomic_load_n(&hot_.epoch, __ATOMIC_ACQUIRE) : 0;
		const std::uint64_t seen = seen_.load(std::memory_order_relaxed);
		/* read_retry against what the last resync applied (no words
		 * when generation checks are off: both sides are then 0). */
		if (mrsync_gen_retry(words_, checked_words_, seen)) [[unlikely]]
			return false;
		ThreadState *ts = tls_slots[0].state;
		if (tls_slots[0].ctx_id != id_) [[unlikely]]
			return false;
		const VaTable::Slot *slot = table_.slot(addr);
		if (!slot) [[unlikely]]
			return false;
		Region *r = slot->load(std::memory_order_acquire);
		if (!r) [[unlikely]]
			return false;
		/* Speculative hold, then validate: if a reclaimer unlinked r
		 * meanwhile, either it sees our hold or we see its unlink. */
		auto &hold = ts->holds[r->slot];
		ThreadState::bump(hold, 1);
		std::atomic_signal_fence(std::memory_order_seq_cst);
		const std::uint64_t start = r->start.load(std::memory_order_relaxed);
		const std::uint64_t size = r->size.load(std::memory_order_relaxed);
		const std::uint64_t off = addr - start;
		if (slot->load(std::memory_order_acquire) != r || off >= size || len - 1 >= size - off ||
		    (access & ~r->access.load(std::memory_order_relaxed)) ||
		    !valid_beyond_first_page(r, addr, len)) [[unlikely]] {
			ThreadState::bump(hold, -1);
			return false;
		}
		if (!r->referenced.load(std::memory_order_relaxed)) [[unlikely]]
			r->referenced.store(1, std::memory_order_relaxed);
		ThreadState::bump(ts->hits);
		const Keys keys = r->current_keys();
		out = {start, size, keys.lkey, keys.rkey, reinterpret_cast<mrsync_region *>(r)};
		if constexpr (kFillMru)
			fill_mru(*ts, *r, hold, epoch, seen, addr, len, out);
		return true;
	}

	/** Keeps what a lookup handed out as the thread's entry (mrsync/mru.h),
	 *  with the epoch and generation read before it was validated: the
	 *  whole registration when it has no invalid entry, else the pages of
	 *  the request (just validated). Writes only this thread's TLS. */
	[[gnu::always_inline]] void fill_mru(ThreadState &ts, const Region &r,
					     std::atomic<std::int64_t> &hold, std::uint64_t epoch,
					     std::uint64_t gen, std::uint64_t addr, std::uint64_t len,
					     const mrsync_reg &reg) const noexcept
	{
		static_assert(sizeof(std::atomic<std::int64_t>) == sizeof(std::int64_t));
		mrsync_mru &m = mrsync_mru_tls;
		constexpr std::uint64_t page = std::uint64_t(1) << VaTable::kPageShift;
		const bool whole = !r.has_invalid.load(std::memory_order_relaxed);
		/* Two words at most, so the inline check sums them without a loop. */
		m.ctx_id = hot_.nwords <= 2 ? hot_.id : 0;
		m.words[0] = hot_.nwords > 0 ? hot_.words[0] : &hot_.zero;
		m.words[1] = hot_.nwords > 1 ? hot_.words[1] : &hot_.zero;
		m.epoch = epoch;
		m.gen = gen;
		m.start = whole ? reg.addr : addr & ~(page - 1);
		m.end = whole ? reg.addr + reg.length : (addr + len + page - 1) & ~(page - 1);
		m.access = r.access.load(std::memory_order_relaxed);
		m.reg = reg;
		m.hold = reinterpret_cast<std::int64_t *>(&hold);
		m.hits = reinterpret_cast<std::uint64_t *>(&ts.hits);
	}

	/** Every kept entry (mrsync/mru.h) of every thread is stale from now on.
	 *  Under the lock, before a replaced translation is released or a
	 *  registration freed (reclaim_locked's barrier comes after). */
	void bump_epoch() noexcept
	{
		__atomic_store_n(&hot_.epoch, hot_.epoch + 1, __ATOMIC_RELEASE);
	}

	/** Invalid entries have no page-table slot, so the page of `addr` is
	 *  valid; a request that spans more pages also needs its last page in
	 *  the table and, if it spans three or more, a region without holes. */
	[[gnu::always_inline]] bool valid_beyond_first_page(const Region *r, std::uint64_t addr,
				     std::uint64_t len) const noexcept
	{
		const std::uint64_t first = addr >> VaTable::kPageShift;
		const std::uint64_t last = (addr + len - 1) >> VaTable::kPageShift;
		if (first == last) [[likely]]
			return true;
		return table_.lookup(addr + len - 1) == r &&
		       (last - first == 1 || !r->has_invalid.load(std::memory_order_relaxed));
	}

	/** The hit path of put: the calling thread's hold counter, nothing
	 *  else. Returns false when the slow path must decide (a thread new to
	 *  this context, or a handle that is not one of ours). */
	[[gnu::always_inline]] bool put_fast(mrsync_region *handle) noexcept
	{
		const Region *r = owned_region(handle);
		if (!r || tls_slots[0].ctx_id != id_) [[unlikely]]
			return false;
		ThreadState::bump(tls_slots[0].state->holds[r->slot], -1);
		return true;
	}

	/** `handle` as one of this context's regions, or nullptr. */
	const Region *owned_region(mrsync_region *handle) const noexcept
	{
		const auto at = reinterpret_cast<std::uintptr_t>(handle);
		const auto base = reinterpret_cast<std::uintptr_t>(slab_.get());
		if (at - base >= std::uintptr_t(slab_size_) * sizeof(Region) ||
		    (at - base) % sizeof(Region))
			return nullptr;
		return reinterpret_cast<const Region *>(handle);
	}

	/** get() when get_fast() declined: validates, resyncs, looks up again,
	 *  creates or re-pins. */
	Status get_slow(std::uint64_t addr, std::uint64_t len, std::uint32_t access, mrsync_reg &out);
	Status put(mrsync_region *handle);
	Status hint(std::uint64_t addr, std::uint64_t len, std::uint32_t access);
	Status notify_unmap(std::uint64_t addr, std::uint64_t len);
	Status resync();
	Result<int> compact();
	mrsync_stats stats();
	/** mrsync_generation(): mrsync_gen_begin() over generation_words(). */
	std::uint64_t generation() const noexcept;
	/** mrsync_generation_words(): the sources' words, then the context's
	 *  own (fork_base_), which moves whenever the set of words changes. */
	int generation_words(const std::uint64_t **words, int max) const noexcept;
	/** mrsync_for_each_region(). */
	int for_each_region(void (*fn)(void *, const mrsync_region_info *), void *arg);
	Driver &driver() noexcept { return *driver_; }
	/** mrsync_ctx_watcher(): a watcher on this context's sources (a second
	 *  client of its hub), made at the first call, owned by the context. */
	Result<Watcher *> watcher();

	/** Fork, in the parent before it forks (context lock held): remembers
	 *  the generation, so the child's can start above it. */
	void note_fork() noexcept { generation_at_fork_ = generation(); }
	/** Fork child: invalidate every cached translation (the driver's
	 *  objects belong to the parent) and move the generation past every
	 *  value the parent showed; the next slow path rebuilds. */
	void mark_forked() noexcept;
	std::mutex &lock() noexcept { return lock_; }
	/** The lock of the hub's sources, which a watcher's thread may hold:
	 *  the fork guard takes it after lock() (the order of every path). */
	std::mutex &hub_lock() noexcept { return hub_->fork_lock(); }

private:
	friend class Update; /* the driver sequence: updater.hpp */

	explicit Context(const mrsync_params &params, VaTable table);

	/* Who asks for pages, which decides what may be pinned for it: a lookup
	 * needs every page it covers; a hint needs none (it only warms the
	 * cache), so it never pins a page another registration left invalid --
	 * that page may be changing right now (docs/design.md, "Pin guards"). */
	enum class Want { lookup, hint };
	/* What building a registration does with memory no source vouches for
	 * or that is not mapped: a new one fails; a fork child's rebuild
	 * leaves it invalid (lookups say why). */
	enum class Unpinnable { fail, invalid };

	/* context.cpp */
	Status validate_request(std::uint64_t addr, std::uint64_t len, std::uint32_t access) const;
	ThreadState &thread_state_locked();
	bool generations_moved() const noexcept;
	void adopt_sources(std::shared_ptr<SourceHub> hub);
	void log_choice(const char *what) const;

	/* lookup.cpp */
	Status slow_path(std::uint64_t addr, std::uint64_t len, std::uint32_t access, Want want,
			 mrsync_reg *out);
	Region *find_locked(std::uint64_t addr, std::uint64_t len, std::uint32_t access);
	Result<Region *> create_region_locked(std::uint64_t addr, std::uint64_t len,
					      std::uint32_t access, Want want);
	Status build_region_locked(Update &u, Region &r, std::uint32_t access, Want want,
				   Unpinnable unpinnable);
	Status watch_locked(std::uint64_t start, std::uint64_t size,
			    std::vector<std::uint64_t> &handles);
	void unwatch_locked(std::span<const std::uint64_t> handles) noexcept;
	std::vector<Range> unsettled_locked(std::uint64_t start, std::uint64_t end) const;
	void claim_table_locked(Region &r, std::uint64_t from, std::uint64_t to);
	Status serve_locked(Region &r, std::uint64_t addr, std::uint64_t len, Want want);
	Status serve_or_retire_locked(Update &u, Region &r, std::uint64_t addr, std::uint64_t len,
				      Want want);
	Status hint_locked(Update &u, Region &r, std::uint64_t addr, std::uint64_t len);
	Status repin_invalid_locked(Update &u, Region &r, std::uint64_t addr, std::uint64_t len);
	std::vector<Region *> overlapping_locked(std::uint64_t start, std::uint64_t end);
	/* fn(Region *) for each region overlapping [start, end) until it returns true. */
	template <typename F>
	void for_each_overlapping_locked(std::uint64_t start, std::uint64_t end, F &&fn);

	/* resync.cpp */
	Status resync_locked();
	Status prepare_pin_locked(std::span<const std::uint64_t> watches, Range range);
	Status repin_locked(Update &u, Region &r, std::span<const Range> offsets);
	void invalidate_locked(Update &u, Region &r, std::span<const Range> offsets);

	/* compaction.cpp */
	std::size_t compact_locked();

	/* fork_rebuild.cpp */
	Status rebuild_after_fork_locked();

	/* eviction.cpp */
	Status make_room_locked(std::uint64_t bytes);
	void retire_locked(Region &r);
	std::int64_t holds_locked(const Region &r) const;
	void reclaim_locked();
	void free_region_locked(Update &u, Region &r);

	/* Read by the hit path; written only under the lock. hot_ first: the
	 * C handle points at it (mrsync/mru.h). */
	mrsync_ctx_hot hot_{};
	const std::uint64_t id_;
	std::uint32_t nsources_ = 0;
	/* The words the hit path checks: nsources_, or 0 when generation
	 * checks are off (MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK). */
	std::uint32_t checked_words_ = 0;
	const bool check_generations_;
	/* Slow path only: false under MRSYNC_CTX_F_TEST_UNGUARDED_PINS. */
	const bool guarded_;
	/* False under MRSYNC_CTX_F_TEST_NO_REVOKE (Update::commit). */
	const bool revoke_refused_;
	/* The sources' generation words, then &fork_base_ (generation_words()). */
	const std::uint64_t *words_[kMaxSources + 1] = {};
	/* mrsync_gen_begin() over the checked words, as the last resync applied
	 * them; ~0 in a fork child until it rebuilds. */
	std::atomic<std::uint64_t> seen_{0};
	VaTable table_;
	std::unique_ptr<Region[]> slab_;
	const std::uint32_t slab_size_;

	/* Slow path, under lock_ (mutable: generation_words() takes it). */
	mutable std::mutex lock_;
	mrsync_params params_;
	std::uint64_t entry_size_;
	bool holes_ok_ = true; /* DriverCaps::holes_ok */
	std::unique_ptr<Driver> driver_;
	/* The sources, shared with the context's watcher (source_hub.hpp):
	 * the context is its client `client_`, resync_locked() drains for it. */
	std::shared_ptr<SourceHub> hub_;
	SourceHub::ClientId client_ = 0;
	std::uint32_t source_mask_ = 0; /* MRSYNC_SOURCE_* of hub_, for a fork child */
	/* Fork: the parent's hubs (a caller may still sum their words) and
	 * the watchers bound to them (the application may still hold one;
	 * never destroyed: their locks may be held forever in the child). */
	std::vector<std::shared_ptr<SourceHub>> abandoned_hubs_;
	std::vector<std::unique_ptr<Watcher>> abandoned_watchers_;
	std::unique_ptr<Watcher> watcher_; /* watcher(), on hub_ */
	std::optional<Backings> backings_;
	std::map<std::pair<std::uint64_t, std::uint32_t>, Region *> index_; /* by start, slot */
	std::uint64_t max_region_size_ = 0;
	std::vector<std::uint32_t> free_slots_;
	std::vector<Region *> retired_;
	std::uint32_t clock_hand_ = 0;
	std::uint32_t live_regions_ = 0;
	std::uint64_t registered_bytes_ = 0;
	std::vector<std::unique_ptr<ThreadState>> threads_;
	std::unordered_map<int, ThreadState *> thread_by_tid_;
	SlowStats stats_;
	bool forked_ = false;
	/* Changes reported before they complete, by a source that cannot tell
	 * when they end (userfaultfd's MADV_DONTNEED: reported before the zap),
	 * and not pinned by a lookup since. A pin of these is trusted only for a
	 * lookup that needs the page now: hints and re-pins nobody asked for
	 * leave them alone (docs/design.md, "Pin guards"). Entry-aligned. */
	RangeSet unsettled_;
	/* Fork: the child's new sources count from 0, so the context's own
	 * word, summed with theirs, jumps past every value the parent showed
	 * (a value once seen never comes back): at the fork (mark_forked) and
	 * again when the child switches to its own sources' words (the
	 * rebuild), which tells callers holding the old words to re-fetch
	 * them. 0 until a fork. Written under the lock (or in the child's
	 * fork handler), read without it. */
	std::uint64_t generation_at_fork_ = 0;
	std::uint64_t fork_base_ = 0;
};

} // namespace mrsync::detail

#endif
