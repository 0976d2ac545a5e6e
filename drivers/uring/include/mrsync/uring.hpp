/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The io_uring software HCA (DESIGN.md, "The driver contract", uring).
 *
 * The device's translation table is the ring's fixed-buffer table: a backing
 * is one registered-buffer slot, which the kernel pins with FOLL_LONGTERM
 * exactly as an RDMA MR. A registration is a key plus a sorted extent list
 * (offset -> backing) kept by the driver. The DMA engine is the kernel itself:
 * "the NIC writes into the registration" is IORING_OP_READ_FIXED from a staging
 * memfd (the wire) into the slot, "the NIC reads out of it" is
 * IORING_OP_WRITE_FIXED from the slot into the staging memfd. A slot that
 * still holds replaced pages really loses the write: the kernel writes into
 * the old, still-pinned page and the application never sees it.
 *
 * Unpinning empties the slot; the kernel posts the old buffer's tag as a CQE
 * once its last in-flight user has finished, and only then does the slot
 * become reusable and its bytes leave stats().pinned_bytes.
 *
 * A DMA request names (lkey, va, length) as on an RDMA NIC. It is refused --
 * it completes with an error and writes nothing anywhere -- when the key is
 * unknown (-EINVAL), the range leaves the registration or meets an extent
 * without a current backing (-EFAULT), or a write lacks write access
 * (-EACCES): the device faults, it never writes to a stale page.
 *
 * Every request ends in exactly one Completion, collected with poll(),
 * wait_one() or wait(). A thread that submitted DMA should not exit before
 * that DMA has completed: io_uring cancels the queued work of a dying task
 * (such requests complete with -ECANCELED).
 *
 * burst() moves many requests at once -- one submission and one wait for
 * the lot -- and returns their results itself.
 */
#ifndef MRSYNC_URING_HPP
#define MRSYNC_URING_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <mrsync/driver.hpp>
#include <mrsync/result.hpp>

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)

namespace mrsync::uring {

/** Smallest rewritable translation entry: one page. */
inline constexpr std::uint64_t kEntryGranularity = 4096;
/** Largest backing: the kernel's limit for one registered buffer. */
inline constexpr std::uint64_t kMaxBackingBytes = 1ull << 30;
/** Backings pinned (or awaiting their release tag) at once: the kernel's
 *  limit on registered buffers per ring. */
inline constexpr std::uint32_t kMaxBackings = 16384;
/** Largest single DMA request. */
inline constexpr std::uint64_t kMaxRequestBytes = 4ull << 20;
/** Default time limit of the blocking calls. */
inline constexpr std::chrono::milliseconds kDefaultWait{10'000};

/** The end of one DMA request. */
struct Completion {
	std::uint64_t user_data = 0; /**< as passed to write()/read() */
	int result = 0;              /**< bytes moved, or -errno */

	friend bool operator==(const Completion &, const Completion &) = default;
};

/** Sizes fixed when the HCA is created. */
struct HcaOptions {
	/** Requests in flight or completed but not yet collected, at once. */
	std::uint32_t queue_depth = 1024;
	/** Bytes of the staging memfd (the wire): the DMA bytes in flight at
	 *  once. A multiple of 64 KiB, at least kMaxRequestBytes. */
	std::uint64_t staging_bytes = 64ull << 20;
	/** Dirty the pages DMA wrote when their backing is unpinned, as an RDMA
	 *  driver does (unpin_user_pages_dirty_lock): io_uring's own unpin
	 *  leaves them clean, and a clean page after MADV_FREE is discarded
	 *  with what DMA wrote into it. false: TEST ONLY, io_uring's behaviour,
	 *  for the negative control. */
	bool dirty_on_unpin = true;
};

/** A snapshot of the HCA's counters. */
struct HcaStats {
	std::uint64_t pinned_bytes = 0;   /**< pinned by the kernel, release tag not yet seen */
	std::uint32_t slots_in_use = 0;   /**< slots pinned or awaiting their release tag */
	std::uint32_t slots_releasing = 0; /**< unpinned, release tag not yet seen */
	std::uint32_t registrations = 0;  /**< live keys */
	std::uint64_t dma_submitted = 0;  /**< requests accepted by write()/read(), refused ones included */
	std::uint64_t dma_completed = 0;  /**< requests ended (their Completion exists) */
	std::uint64_t dma_refused = 0;    /**< requests refused by the translation check */
	std::uint64_t sqes = 0;           /**< SQEs submitted to the kernel for DMA */
	std::uint64_t release_tags = 0;   /**< slot-release tag CQEs processed */
	std::uint64_t submits = 0;        /**< io_uring_submit calls that carried DMA SQEs */
};

/** One DMA operation of a burst (Hca::burst()). */
struct DmaOp {
	std::uint32_t lkey = 0;    /**< registration key */
	std::uint64_t va = 0;      /**< address inside the registration */
	/** into_memory: the source, may be reused once burst() returns;
	 *  otherwise the destination, filled by the time burst() returns. */
	std::byte *buf = nullptr;
	std::uint32_t len = 0;     /**< 1 .. kMaxRequestBytes */
	bool into_memory = true;   /**< true: as write(); false: as read() */
};

/**
 * The software HCA. Driver operations follow driver.hpp; this class adds
 * the DMA API used by tests, the torture suite, the benchmark and the demo.
 *
 * Locks, in the order they nest: control (driver operations), submission
 * (the SQ, the registrations, publishing slot retirement), completion
 * (the CQ, collected completions), pool (request slots, staging), backings.
 */
class Hca final : public Driver {
public:
	/**
	 * Creates a ring with a sparse 16384-slot buffer table and the staging memfd.
	 * @return the HCA, or EINVAL (bad options) or the io_uring/memfd errno.
	 * Thread safety: any thread.
	 */
	static Result<std::unique_ptr<Hca>> create(const HcaOptions &options = {});

	/**
	 * Probes io_uring by creating a tiny ring with one sparse buffer slot.
	 * @param why receives what is missing when the answer is false.
	 * Thread safety: any thread.
	 */
	static bool available(std::string &why);

	/** Waits for in-flight DMA, then unregisters every buffer so all pins are
	 *  gone on return (after abandon(): only unmaps and closes). No other call
	 *  may be running. */
	~Hca() override;
	Hca(const Hca &) = delete;
	Hca &operator=(const Hca &) = delete;

	/** @return "uring". Thread safety: any thread. */
	std::string_view name() const noexcept override;
	/** @return granularity 4096, backings of at most 1 GiB, 16384 backings,
	 *  keys that survive map(). Thread safety: any thread. */
	DriverCaps caps() const noexcept override;

	/**
	 * Registers [va, va + len) into a free slot (the kernel pins it).
	 * @param va  page-aligned start.
	 * @param len non-zero multiple of 4096, at most 1 GiB.
	 * @return the backing; EINVAL (bad range), EFAULT (not mapped or not
	 *         pinnable), ENOMEM (RLIMIT_MEMLOCK reached), ENOSPC (no free slot).
	 * Thread safety: takes the control lock; may collect release tags.
	 */
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override;

	/**
	 * Empties the backing's slot. DMA checks refuse it from now on; the
	 * pages are released (and pinned_bytes drops) when the kernel posts the
	 * slot's tag after its last in-flight user -- collected by fence(),
	 * poll(), the waits and wait_releases(). An unknown backing is ignored.
	 * Thread safety: takes the control lock, then the submission lock briefly.
	 */
	void unpin(BackingId backing) noexcept override;

	/**
	 * Creates a registration. lkey == rkey, never 0, never reused.
	 * @param va, len page-aligned, non-empty, not wrapping.
	 * @param access MRSYNC_ACCESS_* bits; write() needs a write bit.
	 * @param translation sorted extents covering [0, len) exactly, each a
	 *        multiple of 4096, served by kNoBacking or by a pinned backing
	 *        whose range covers the extent's addresses.
	 * @return the keys or EINVAL with a message naming the bad argument.
	 * Thread safety: takes the control lock, then the submission lock briefly.
	 */
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> translation) override;

	/**
	 * Replaces a registration's translation. DMA submitted concurrently sees
	 * the whole old or the whole new list, never a mix.
	 * @return the same keys, or EINVAL (unknown keys, bad translation).
	 * Thread safety: takes the control lock, then the submission lock to swap.
	 */
	Result<Keys> map(Keys keys, std::span<const Extent> translation) override;

	/**
	 * map() that rewrites only the extents of `translation` that cover the
	 * `changed` offsets (checked as map() checks the whole list), in place in
	 * the registration's list: the cost follows the change, not the
	 * registration's size. Slots are not touched: pin() and unpin() rewrite
	 * the kernel's buffer table; the extent lists say which slot serves what.
	 * @param changed sorted, disjoint, non-empty ranges of offsets inside the
	 *        registration; the rest of `translation` must equal what the
	 *        device has (the core's contract, driver.hpp).
	 * @return the same keys, or EINVAL (unknown keys, bad ranges or extents).
	 * Thread safety: as map().
	 */
	Result<Keys> map_changed(Keys keys, std::span<const Extent> translation,
				 std::span<const Range> changed) override;

	/** Destroys a registration; later DMA naming its key is refused.
	 *  Thread safety: takes the control lock, then the submission lock. */
	void destroy(Keys keys) noexcept override;

	/**
	 * Returns once every DMA request submitted before the call has completed;
	 * collects the completions (kept for poll()) and release tags it meets.
	 * @return success, ETIMEDOUT after a minute without getting there, or
	 *         ESHUTDOWN after abandon().
	 * Thread safety: any thread; takes the submission lock briefly, then
	 * the completion lock.
	 */
	Status fence() override;

	/** Fork child: closes the ring and the memfd and unmaps the staging area
	 *  without any io_uring call, since the ring and its pinned buffers belong
	 *  to the parent. Takes no lock (a parent thread may have held one at fork).
	 *  DMA calls and waits fail with ESHUTDOWN afterwards, unpin() does
	 *  nothing, and the object should be destroyed next. */
	void abandon() noexcept override;

	/**
	 * DMA into the registration: copies `src` onto the wire, then has the
	 * kernel move it into the backing(s) that serve [va, va + src.size()).
	 * An extent boundary inside the range costs one more SQE, not one more
	 * completion.
	 * @param lkey registration key.
	 * @param va address inside the registration (RDMA-style addressing).
	 * @param src 1 .. kMaxRequestBytes bytes; may be reused on return.
	 * @param user_data returned in the Completion.
	 * @return success (a Completion will follow, possibly a refusal), or
	 *         EINVAL (empty), EMSGSIZE (too large), EBUSY (queue_depth
	 *         requests not yet collected), ETIMEDOUT (no staging space
	 *         freed within kDefaultWait), ESHUTDOWN (abandoned).
	 * Thread safety: any thread; copies without a lock, then takes the
	 * submission lock to translate and submit.
	 */
	Status write(std::uint32_t lkey, std::uint64_t va, std::span<const std::byte> src,
		     std::uint64_t user_data);

	/**
	 * DMA out of the registration into `dst`, which must stay valid until
	 * the Completion is collected (it is filled by whichever thread reaps).
	 * On refusal or error `dst` is untouched. Errors and thread safety as write().
	 */
	Status read(std::uint32_t lkey, std::uint64_t va, std::span<std::byte> dst,
		    std::uint64_t user_data);

	/**
	 * Moves a burst of DMA with one submission and one completion wait per
	 * round, and returns once every operation has ended. A round is up to
	 * 256 operations or kMaxRequestBytes, one request and one staging run.
	 * Each operation is checked against its registration's translation as
	 * write()/read() are -- all of a round's under one hold of the
	 * submission lock, right before its one io_uring_submit, so none sees a
	 * torn or retired translation -- and a refused one writes nothing
	 * anywhere. Pieces on the same backing in the same direction share one
	 * vectored SQE where the kernel has READV/WRITEV_FIXED (Linux 6.15).
	 * Nothing is allocated per burst; its completions never reach
	 * poll()/wait().
	 * @param ops the operations; any mix of keys, directions, valid and not.
	 * @param results caller-owned, at least ops.size(): results[i] is the
	 *        bytes ops[i] moved, or -errno as a write()/read() Completion
	 *        (-EINVAL unknown key or zero length, -EMSGSIZE too large,
	 *        -EFAULT outside the registration or no current backing,
	 *        -EACCES write without write access).
	 * @return success (each result says what its operation did); EINVAL
	 *         (results too short, nothing moved), EBUSY (queue_depth
	 *         requests hold completions not yet collected), ETIMEDOUT (no
	 *         staging freed within kDefaultWait, or DMA not done within a
	 *         minute), ESHUTDOWN; then the results from the failed round on
	 *         are -ECANCELED (earlier rounds' stand).
	 * Thread safety: any thread; several bursts may run at once.
	 */
	Status burst(std::span<const DmaOp> ops, std::span<int> results);

	/**
	 * Collects up to out.size() completions, oldest first, without blocking.
	 * @return how many were stored in `out` (0 after abandon()).
	 * Thread safety: any thread; takes the completion lock.
	 */
	std::size_t poll(std::span<Completion> out);

	/**
	 * Waits for the next completion.
	 * @return it; ENOENT (nothing outstanding), ETIMEDOUT, ESHUTDOWN.
	 * Thread safety: any thread; several waiters share the CQ.
	 */
	Result<Completion> wait_one(std::chrono::milliseconds timeout = kDefaultWait);

	/**
	 * Waits for the completion of the request submitted with `user_data`
	 * (the oldest one if several), leaving the others to be collected.
	 * @return it; ENOENT (no such request outstanding), ETIMEDOUT, ESHUTDOWN.
	 * Thread safety: any thread; several waiters share the CQ.
	 */
	Result<Completion> wait(std::uint64_t user_data,
				std::chrono::milliseconds timeout = kDefaultWait);

	/**
	 * Waits until every unpinned backing's release tag has arrived, so
	 * pinned_bytes and slots_in_use count only live backings.
	 * @return success, ETIMEDOUT or ESHUTDOWN.
	 * Thread safety: any thread; takes the completion lock.
	 */
	Status wait_releases(std::chrono::milliseconds timeout = kDefaultWait);

	/** Counters; each is exact, the set is not one atomic snapshot.
	 *  Thread safety: any thread; takes the backings lock briefly. */
	HcaStats stats() const noexcept;

private:
	struct Impl; /* uring_pvt.hpp */
	explicit Hca(std::unique_ptr<Impl> impl) noexcept;
	std::unique_ptr<Impl> impl_;
};

} // namespace mrsync::uring
#pragma GCC visibility pop

#endif
