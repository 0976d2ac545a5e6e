/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/dma_engine: the engine's state, shared by ring.cpp
 * (resources), slots.cpp (the slot table), submit.cpp and burst.cpp
 * (submission) and reap.cpp (completion).
 */
#ifndef MRSYNC_DMA_ENGINE_PVT_HPP
#define MRSYNC_DMA_ENGINE_PVT_HPP

#include <liburing.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <mrsync/log.hpp>

#include "dma_engine.hpp"

#include "format.hpp"
#include "unique_fd.hpp"
#include "unique_mmap.hpp"

namespace mrsync::dma {

namespace detail {

using Clock = std::chrono::steady_clock;

/* The helpers of lib/common, under the names this driver uses. */
using ::mrsync::detail::errno_text;
using ::mrsync::detail::fmt;
using ::mrsync::detail::UniqueFd;
using ::mrsync::detail::UniqueMmap;

/** Owns an io_uring. Closing it only unmaps the rings and closes the fd --
 *  which is also all a fork child may do. */
class Ring {
public:
	Ring() = default;
	Ring(const Ring &) = delete;
	Ring &operator=(const Ring &) = delete;
	~Ring() { close(); }
	/** io_uring_queue_init_params; returns 0 or -errno. */
	int init(unsigned entries, io_uring_params &params) noexcept;
	void close() noexcept;
	io_uring *get() noexcept { return &ring_; }
	bool live() const noexcept { return live_; }

private:
	io_uring ring_{};
	bool live_ = false;
};

/** First-fit allocator of contiguous staging chunks (a bitmap). */
class ChunkMap {
public:
	explicit ChunkMap(std::uint32_t chunks);
	/** Finds `n` free contiguous chunks, marks them used, stores the first. */
	bool alloc(std::uint32_t n, std::uint32_t &first) noexcept;
	void free(std::uint32_t first, std::uint32_t n) noexcept;

private:
	bool used(std::uint32_t i) const noexcept { return words_[i / 64] >> (i % 64) & 1; }
	void set(std::uint32_t first, std::uint32_t n, bool on) noexcept;
	std::vector<std::uint64_t> words_;
	std::uint32_t chunks_;
};

/** Indices of completed requests, oldest first; fixed capacity. */
class IndexFifo {
public:
	explicit IndexFifo(std::uint32_t capacity) : buf_(capacity) {}
	bool empty() const noexcept { return count_ == 0; }
	std::uint32_t size() const noexcept { return count_; }
	std::uint32_t at(std::uint32_t i) const noexcept { return buf_[(head_ + i) % buf_.size()]; }
	void push(std::uint32_t v) noexcept;
	/** Removes the i-th oldest entry, keeping the order of the others. */
	std::uint32_t take(std::uint32_t i) noexcept;

private:
	std::vector<std::uint32_t> buf_;
	std::uint32_t head_ = 0;
	std::uint32_t count_ = 0;
};

inline constexpr std::uint64_t kChunk = 64 * 1024;
/** SQ entries of the ring. */
inline constexpr unsigned kSqEntries = 1024;
/** IORING_OP_READV_FIXED / WRITEV_FIXED of the Linux 6.15 uapi, which
 *  liburing 2.3's header predates; used only when the probe lists them. */
inline constexpr int kOpReadvFixed = 60;
inline constexpr int kOpWritevFixed = 61;
/** A DMA CQE's user_data: the request index in the low 32 bits and, for a
 *  burst, the SQE's number within the round above them (below kTagBit). */
inline constexpr unsigned kSqeShift = 32;
inline constexpr std::uint32_t kSlotBits = 14; /* kMaxBackings == 1 << 14 */
inline constexpr std::uint32_t kSlotMask = (1u << kSlotBits) - 1;
/** Generations wrap below 2^18 - 1 so no BackingId equals kNoBacking. */
inline constexpr std::uint32_t kGenLimit = (1u << (32 - kSlotBits)) - 1;
/** CQE user_data of a slot-release tag; DMA CQEs carry a request index. */
inline constexpr std::uint64_t kTagBit = 1ull << 63;

enum class SlotState : std::uint8_t { Free, Pinning, Pinned, Releasing };

/** One registered-buffer slot: one backing. */
struct Slot {
	std::uint64_t va = 0;
	std::uint64_t len = 0;
	std::uint32_t gen = 0;             /**< bumped per pin; part of the BackingId */
	SlotState state = SlotState::Free; /**< under backing_mu */
	/** The BackingId DMA may use, or kNoBacking. Cleared under the
	 *  submission lock, so a request that saw it live is already in the
	 *  kernel holding the old buffer when the slot is emptied. */
	std::atomic<BackingId> live{kNoBacking};
	/** DMA wrote into this backing since it was pinned (unpin dirties). */
	std::atomic<bool> written{false};
};

inline BackingId backing_id(std::uint32_t slot, std::uint32_t gen) noexcept
{
	return gen << kSlotBits | slot;
}

enum class ReqState : std::uint8_t { Free, Reserved, InFlight, Done };

/** One DMA request, reused; its index is the SQE user_data. */
struct Request {
	std::atomic<ReqState> state{ReqState::Free};
	std::uint64_t seq = 0;        /**< submission ticket, for fence() */
	std::uint64_t user_data = 0;
	std::byte *dst = nullptr;     /**< read(): copied to at completion */
	std::uint64_t len = 0;
	std::uint32_t chunk = 0;      /**< staging chunks [chunk, chunk + nchunks) */
	std::uint32_t nchunks = 0;
	std::uint32_t pending = 0;    /**< SQEs without a CQE yet */
	std::uint64_t transferred = 0;
	int result = 0;               /**< first error (or the refusal), else 0 */
	/** burst(): one request per round; its thread collects it (not
	 *  poll()/wait()), copies reads out and frees its staging. */
	bool burst = false;
	int *sqe_results = nullptr;   /**< burst(): each SQE's CQE result, by number */
};

/** Fixed-file index of the staging memfd (the wire). */
inline constexpr unsigned kWireFile = 0;

/** What a wait predicate reports. */
enum class Progress { Done, Pending, Never };

/** A non-owning reference to a `Progress()` callable: waits take predicates
 *  without std::function's possible allocation. */
class PredRef {
public:
	template <class F>
	PredRef(F &f) noexcept
		: obj_(&f), call_([](void *o) { return (*static_cast<F *>(o))(); })
	{
	}
	Progress operator()() const { return call_(obj_); }

private:
	void *obj_;
	Progress (*call_)(void *);
};

} // namespace detail

struct Engine::Impl {
	Impl(const EngineOptions &options, Translator &translator);
	~Impl();

	/* ring.cpp */
	Status open();
	void close_without_unregistering() noexcept;

	/* slots.cpp */
	void dirty_resident(std::uint64_t va, std::uint64_t len) noexcept;
	bool take_free_slot(std::uint32_t &slot, std::uint32_t &gen) noexcept;
	/** The backing of a piece may be used: pinned and not retired. */
	bool live(BackingId b) const noexcept
	{
		return b != kNoBacking &&
		       slots[b & detail::kSlotMask].live.load(std::memory_order_acquire) == b;
	}

	/* submit.cpp */
	Status submit(bool to_memory, std::uint32_t key, std::uint64_t va, std::byte *buf,
		      std::uint64_t len, std::uint64_t user_data, int *refusal);
	Result<std::uint32_t> reserve(std::uint64_t len, std::uint64_t user_data);
	/** Asks the translator for `pieces` and checks each is live (kDiscard
	 *  passes); returns the refusal. Under the submission lock. */
	int translate(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool to_memory);
	/** Queues request idx's SQEs from `pieces` (a NOP when refused or
	 *  when no piece needs the kernel). */
	void emit(std::uint32_t idx, bool refused, bool to_memory, bool async);
	/** Puts request idx (Reserved) in flight under the submission lock:
	 *  translates, stamps its ticket, emits its SQEs; returns the refusal. */
	int launch(std::uint32_t idx, std::uint32_t key, std::uint64_t va, bool to_memory,
		   bool async);

	/* burst.cpp */
	struct Round;
	Result<std::size_t> burst_round(std::span<const DmaOp> ops, std::span<int> results,
					Round &round);
	void launch_round(std::span<const DmaOp> ops, std::span<int> results, Round &round);
	void settle_round(std::span<const DmaOp> ops, std::span<int> results, Round &round);
	io_uring_sqe *next_sqe();
	void flush_sq();

	/* reap.cpp */
	Status reap_until(detail::PredRef pred, detail::Clock::time_point deadline,
			  const char *what);
	void collect();
	void drain_cq();
	void on_dma_cqe(std::uint64_t user_data, int res);
	void on_release_tag(std::uint64_t tag);
	void finish(std::uint32_t idx);
	Completion take(std::uint32_t fifo_pos) noexcept;
	void release_request(std::uint32_t idx) noexcept;
	void wait_kernel(detail::Clock::time_point deadline);
	Status fence_until(detail::Clock::time_point deadline);

	EngineOptions options;
	Translator &translator;
	detail::Ring ring;
	detail::UniqueFd memfd;
	detail::UniqueMmap staging;
	bool abandoned = false;
	bool vectored_fixed = false; /**< the kernel has READV/WRITEV_FIXED */

	/* submission: the SQ, tickets, the translator's answer */
	std::mutex submit_mu;
	std::uint64_t seq = 0;
	std::vector<Piece> pieces; /**< the request being translated */

	/* completion: the CQ and the collected completions */
	std::mutex reap_mu;
	std::condition_variable reap_cv;
	bool leader = false; /**< a thread waits in the kernel; only it drains */
	detail::IndexFifo done;

	/* pool: free request slots and staging chunks */
	std::mutex pool_mu;
	std::vector<std::uint32_t> free_reqs;
	detail::ChunkMap chunks;
	std::unique_ptr<detail::Request[]> reqs;

	/* backings: slot states and the free-slot stack */
	mutable std::mutex backing_mu;
	std::vector<std::uint32_t> free_slots;
	std::unique_ptr<detail::Slot[]> slots;

	struct Counters {
		std::atomic<std::uint64_t> pinned_bytes{0};
		std::atomic<std::uint32_t> slots_releasing{0};
		std::atomic<std::uint64_t> dma_submitted{0};
		std::atomic<std::uint64_t> dma_completed{0};
		std::atomic<std::uint64_t> dma_refused{0};
		std::atomic<std::uint64_t> sqes{0};
		std::atomic<std::uint64_t> release_tags{0};
		std::atomic<std::uint64_t> submits{0};
		std::atomic<std::uint32_t> inflight{0}; /**< requests Reserved..InFlight, bursts' not */
		/** Requests InFlight, bursts' included: raised under the submission
		 *  lock before the state says InFlight, lowered after it says Done,
		 *  so fence() that reads 0 after taking its ticket has nothing to
		 *  wait for and skips the scan of every request (it still reaps
		 *  the CQ: release tags are collected there). */
		std::atomic<std::uint32_t> launched{0};
	} counters;
};

} // namespace mrsync::dma

#endif
