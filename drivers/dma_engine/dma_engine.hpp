/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to mrsync's drivers: the io_uring DMA engine that the uring HCA
 * (drivers/uring) and the mlx5 model (drivers/mlx5/model) share.
 *
 * The engine owns what moves bytes through real pinned memory: the ring, the
 * fixed-buffer slot table (a backing is one registered-buffer slot, pinned by
 * the kernel with FOLL_LONGTERM as an RDMA MR), the staging memfd that stands
 * for the wire, submission (single requests and bursts), completion reaping
 * with the slot-release tags, and the in-flight accounting fence() relies on.
 *
 * It does not know keys. A request names (key, va, length); the engine asks
 * its Translator, under the submission lock and once per request, which
 * (backing, va, length) pieces serve it, then refuses the whole request if a
 * piece has no backing or names a backing unpinned since -- a retired slot
 * is never written -- and otherwise moves each piece with READ_FIXED (the
 * device writes into memory) or WRITE_FIXED (it reads out of it).
 * unpin() retires a backing under the same lock, so a request that saw it
 * live is already in the kernel, holding the old buffer, when the slot is
 * emptied; the kernel's release tag ends the pin after that request.
 *
 * The DMA vocabulary (Completion, DmaOp, the limits) is the one uring.hpp
 * publishes: the engine is what that API runs on.
 */
#ifndef MRSYNC_DMA_ENGINE_HPP
#define MRSYNC_DMA_ENGINE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/result.hpp>
#include <mrsync/uring.hpp>

namespace mrsync::dma {

using uring::Completion;
using uring::DmaOp;
using uring::kDefaultWait;
using uring::kMaxBackingBytes;
using uring::kMaxBackings;
using uring::kMaxRequestBytes;

/** Pinning granularity: one page. */
inline constexpr std::uint64_t kPageBytes = uring::kEntryGranularity;

/** A piece's backing that swallows writes and reads as zeros: an mlx5 null
 *  MR. Never a real BackingId (its generation is one the engine never issues). */
inline constexpr BackingId kDiscard = kNoBacking - 1;

/** Bytes [va, va + len) of the memory `backing` pins (or kNoBacking: the
 *  request is refused; kDiscard: the bytes go nowhere). */
struct Piece {
	BackingId backing = kNoBacking;
	std::uint64_t va = 0;
	std::uint64_t len = 0;
};

/** How a driver turns its keys into pieces: the part of the DMA path that
 *  differs between devices (uring: the key's extent list; the mlx5 model:
 *  the KLM walk of one packet). */
class Translator {
public:
	virtual ~Translator() = default;
	/**
	 * Resolves one request.
	 * @param key, va, len what the request names (len 1 .. kMaxRequestBytes).
	 * @param into_memory true: the device writes into memory.
	 * @param out empty on entry; receives the pieces in request order, their
	 *        lengths summing to `len`.
	 * @return 0, or the refusal as a positive errno (then `out` is ignored
	 *         and nothing moves).
	 * Thread safety: called with the engine's submission lock held, once
	 * per request; must not call back into the engine.
	 */
	virtual int translate(std::uint32_t key, std::uint64_t va, std::uint64_t len,
			      bool into_memory, std::vector<Piece> &out) = 0;
};

/** Sizes fixed when the engine is created. */
struct EngineOptions {
	/** Prefix of every message ("uring", "mlx5 model"). */
	const char *name = "dma";
	/** Requests in flight or completed but not yet collected, at once. */
	std::uint32_t queue_depth = 1024;
	/** Bytes of the staging memfd: a multiple of 64 KiB, >= kMaxRequestBytes. */
	std::uint64_t staging_bytes = 64ull << 20;
	/** Dirty the pages DMA wrote when their backing is unpinned
	 *  (uring::HcaOptions::dirty_on_unpin says why). */
	bool dirty_on_unpin = true;
};

/** The engine's counters: uring::HcaStats, whose `registrations` (keys
 *  are the driver's) the engine leaves 0. */
using EngineStats = uring::HcaStats;

/**
 * Checks a range to pin or register: non-empty, page-aligned, not wrapping,
 * at most `max` bytes. @return EINVAL naming `name`, `op` and the range.
 * Thread safety: any thread.
 */
Status check_range(const char *name, const char *op, std::uint64_t va, std::uint64_t len,
		   std::uint64_t max);

/**
 * The engine. Locks, in the order they nest: submission (the SQ, the
 * translator's tables, retiring slots), completion (the CQ, collected
 * completions), pool (request slots, staging), backings (slot states).
 * A driver's own lock, if any, nests outside them all.
 */
class Engine {
public:
	/**
	 * Creates the ring with a sparse kMaxBackings-slot buffer table and the
	 * staging memfd.
	 * @param translator outlives the engine.
	 * @return the engine, or EINVAL (bad options) or the io_uring/memfd errno.
	 * Thread safety: any thread.
	 */
	static Result<std::unique_ptr<Engine>> create(const EngineOptions &options,
						      Translator &translator);
	/** Probes io_uring (a tiny ring, one sparse slot); `why` says what is
	 *  missing when false. Thread safety: any thread. */
	static bool available(std::string &why);

	/** Waits for in-flight DMA, then unregisters every buffer (after
	 *  abandon(): only unmaps and closes). No other call may be running. */
	~Engine();
	Engine(const Engine &) = delete;
	Engine &operator=(const Engine &) = delete;

	/**
	 * Registers [va, va + len) into a free slot (the kernel pins it).
	 * @return the backing; EINVAL, EFAULT, ENOMEM (RLIMIT_MEMLOCK), ENOSPC,
	 *         ESHUTDOWN, as uring::Hca::pin().
	 * Thread safety: serialise with unpin() (a driver's control lock).
	 */
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len);
	/** Empties the backing's slot: requests translated from now on are
	 *  refused; the pages go with the kernel's release tag. Unknown: ignored.
	 *  Thread safety: serialise with pin(); takes the submission lock. */
	void unpin(BackingId backing) noexcept;
	/** The range a pinned backing holds. @return false if not pinned.
	 *  Thread safety: any thread; takes the backings lock. */
	bool pinned_range(BackingId backing, std::uint64_t &va, std::uint64_t &len) const;

	/** The submission lock: a driver changes what its translator reads
	 *  under it, so a request sees a whole translation, old or new.
	 *  Thread safety: any thread; do not call the engine while holding it. */
	std::unique_lock<std::mutex> hold_submission();

	/**
	 * DMA into memory: copies `src` onto the wire, translates and submits.
	 * @param refusal if set, receives the translator's or the engine's
	 *        refusal (0: moving), also reported in the Completion.
	 * @return as uring::Hca::write().
	 * Thread safety: any thread.
	 */
	Status write(std::uint32_t key, std::uint64_t va, std::span<const std::byte> src,
		     std::uint64_t user_data, int *refusal = nullptr);
	/** DMA out of memory into `dst` (valid until the Completion is
	 *  collected). As uring::Hca::read(). */
	Status read(std::uint32_t key, std::uint64_t va, std::span<std::byte> dst,
		    std::uint64_t user_data, int *refusal = nullptr);
	/** Many operations, one submission and one wait per round; as
	 *  uring::Hca::burst(). */
	Status burst(std::span<const DmaOp> ops, std::span<int> results);

	/** As uring::Hca::poll(). */
	std::size_t poll(std::span<Completion> out);
	/** As uring::Hca::wait_one(). */
	Result<Completion> wait_one(std::chrono::milliseconds timeout = kDefaultWait);
	/** As uring::Hca::wait(). */
	Result<Completion> wait(std::uint64_t user_data,
				std::chrono::milliseconds timeout = kDefaultWait);
	/** As uring::Hca::wait_releases(). */
	Status wait_releases(std::chrono::milliseconds timeout = kDefaultWait);
	/**
	 * Returns once every request submitted before the call has completed
	 * (skipping the scan of the requests when none is in flight).
	 * @return success, ETIMEDOUT after a minute, ESHUTDOWN after abandon().
	 * Thread safety: any thread.
	 */
	Status fence();
	/** Fork child: closes without any io_uring call (uring::Hca::abandon()).
	 *  Takes no lock. */
	void abandon() noexcept;
	/** After abandon(). Thread safety: any thread. */
	bool abandoned() const noexcept;

	/** Counters; each exact, not one snapshot. Thread safety: any thread. */
	EngineStats stats() const noexcept;

	struct Impl; /* engine_pvt.hpp */

private:
	explicit Engine(std::unique_ptr<Impl> impl) noexcept;
	std::unique_ptr<Impl> impl_;
};

} // namespace mrsync::dma

#endif
