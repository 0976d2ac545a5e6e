/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/mlx5 and its tests: the mlx5 driver logic on the seam
 * (device.hpp). shared/MLX5.md §2-4 and docs/mlx5.md say why it is shaped so:
 *  - two levels: a parent key (VA-based, one KLM per window) over zero-based
 *    child keys of at most one inline UMR of KLMs; the window grows with the
 *    registration so that a child never needs more, and a one-page change is
 *    one child UMR at any size;
 *  - splicing: an extent is a sub-range of a chunk MR, so a changed page is a
 *    small MR between two pieces of the old chunk;
 *  - holes (kNoBacking) point at a never-configured indirect key: DMA there
 *    fails (MLX5.md §5(b)4: a free-key leaf fails; hardware check pending),
 *    never a null MR, which would discard it; on hardware that does not
 *    refuse there (DriverOptions::poison_refused = false) the whole parent
 *    key is free while its registration has a hole (caps().holes_ok = false);
 *  - the fence polls the UMR completions with a bounded wait; an error CQE is
 *    recovered as the kernel does (drain, reset the QP to RTS, re-post the full
 *    intended list of every failed or flushed key); replaced chunks stay
 *    registered until the core unpins them after a successful fence;
 *  - entry pressure: a window whose list would reach 40 of 52 KLMs is
 *    reported crowded (Driver::crowded), and the core re-pins its runs as
 *    single chunks in the same update, so map() fits and the keys stay;
 *  - keys are pooled: destroy() makes them free by UMR and parks them in a
 *    quarantine FIFO before reuse.
 * Thread safety: the core serialises the driver operations (context lock);
 * the device's data path runs beside them.
 */
#ifndef MRSYNC_MLX5_DRIVER_HPP
#define MRSYNC_MLX5_DRIVER_HPP

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include <mrsync/driver.hpp>

#include "device.hpp"
#include "umr_wqe.hpp"

namespace mrsync::mlx5 {

struct DriverOptions {
	std::uint64_t min_window = 32ull << 20;
	std::chrono::milliseconds fence_timeout{30'000};
	/** Destroyed keys wait behind this many others before reuse. */
	std::size_t quarantine = 64;
	/* TEST ONLY, the negative controls the model must catch: */
	bool test_no_small_fence = false;  /**< raw WQEs without INITIATOR_SMALL_FENCE */
	bool test_no_fence_wait = false;   /**< fence() returns without the UMR completions */
	/** map() revokes the whole key first, as ibv_rereg_mr does on mlx5: DMA
	 *  to untouched pages is refused meanwhile (the in-flight test's control). */
	bool test_revoke_on_map = false;
	/** Entry pressure: a window whose list would reach this many KLMs is
	 *  reported crowded (Driver::crowded), so the core coalesces it before
	 *  the map. 0: 10/13 of a UMR's capacity (40 of 52). */
	std::uint32_t pressure_klms = 0;
	/** What the hardware does with a KLM naming a free key (test/hw/mlx5's
	 *  "poison refusal"). false: holes cannot refuse by themselves, so the
	 *  driver runs with caps().holes_ok = false and makes the whole parent
	 *  key free while its registration has a hole (same number, all DMA
	 *  refused), re-enabled by a full configure once every hole is filled. */
	bool poison_refused = true;
	/** TEST ONLY: report no pressure (the churn test's negative control:
	 *  a window past 52 KLMs makes map() fail and the core retire the key). */
	bool test_no_pressure = false;
	/** TEST ONLY: a map that cannot fit leaves the key naming the old
	 *  entries (the revoke's negative control: writes through it are lost). */
	bool test_no_revoke = false;
	/** TEST ONLY: park destroyed keys under the number they had (the tag
	 *  rotation's negative control: a stale rkey reaches the key's next user). */
	bool test_no_tag_rotation = false;
};

struct DriverStats {
	std::uint64_t umrs = 0;           /**< UMR WQEs posted, re-posts included */
	std::uint64_t umr_klms = 0;       /**< KLM entries in them */
	std::uint64_t umr_bytes = 0;      /**< WQE bytes posted */
	std::uint64_t recoveries = 0;     /**< error completions recovered */
	std::uint64_t keys_created = 0;   /**< mkeys created on the device */
	std::uint64_t keys_reused = 0;    /**< mkeys taken from the pool */
	std::uint64_t keys_retagged = 0;  /**< destroyed keys parked under a new tag */
};

class Mlx5Driver final : public Driver {
public:
	/** Probes the device's caps (indirect UMR, depth 3 for the poison key). */
	static Result<std::unique_ptr<Mlx5Driver>> create(std::unique_ptr<Device> device,
							  const DriverOptions &options = {});
	~Mlx5Driver() override;

	std::string_view name() const noexcept override { return "mlx5"; }
	DriverCaps caps() const noexcept override;
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override;
	void unpin(BackingId backing) noexcept override;
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> translation) override;
	Result<Keys> map(Keys keys, std::span<const Extent> translation) override;
	/** The windows whose lists would reach pressure_klms(). */
	std::vector<Range> crowded(Keys keys, std::span<const Extent> translation) const override;
	void destroy(Keys keys) noexcept override;
	Status fence() override;
	void abandon() noexcept override;

	Device &device() noexcept { return *device_; }
	DriverStats stats() const noexcept { return stats_; }
	/** The window size a registration of `len` bytes gets. */
	std::uint64_t window_for(std::uint64_t len) const noexcept;

private:
	struct Reg {
		std::uint64_t va = 0, len = 0, window = 0;
		std::uint32_t access = 0;
		std::vector<std::uint32_t> children;
		std::vector<std::vector<Klm>> lists; /**< each child's intended list */
		bool parent_free = false; /**< made free for a hole (!poison_refused) */
	};
	/** A posted UMR, kept until its completion so that it can be re-posted. */
	struct Posted {
		UmrSpec spec;
		std::vector<Klm> klms;
	};

	Mlx5Driver(std::unique_ptr<Device> device, const DeviceCaps &caps,
		   const DriverOptions &options) noexcept;
	std::vector<Klm> window_klms(const Reg &reg, std::size_t w,
				     std::span<const Extent> translation) const;
	Result<std::vector<Klm>> window_list(const Reg &reg, std::size_t w,
					     std::span<const Extent> translation) const;
	std::uint32_t pressure_klms() const noexcept;
	bool must_revoke(std::span<const Extent> translation) const noexcept;
	Status check_translation(const Reg &reg, std::span<const Extent> translation) const;
	Result<std::uint32_t> take_key();
	Status post(UmrSpec spec, std::vector<Klm> klms);
	Status post_list(std::uint32_t key, std::uint64_t start, std::uint64_t len,
			 std::uint32_t access, std::vector<Klm> klms);
	Status post_invalidate(std::uint32_t key);
	/** Makes a destroyed key free and, with caps().update_tag, gives it the
	 *  next tag in the same UMR. @return the number it is parked under. */
	Result<std::uint32_t> park(std::uint32_t key);
	Status post_parent(std::uint32_t key, const Reg &reg);
	Status wait_outstanding();
	Error revoke(std::uint32_t parent, Error why);
	Status recover(std::vector<std::uint64_t> failed);

	std::unique_ptr<Device> device_;
	DeviceCaps dev_caps_;
	DriverOptions options_;
	bool abandoned_ = false;
	std::uint32_t poison_ = 0;
	std::uint16_t pi_ = 0;
	std::uint64_t next_wr_ = 1;
	std::map<std::uint64_t, Posted> outstanding_;
	std::unordered_map<std::uint32_t, Reg> regs_;  /**< by parent key */
	std::vector<MrHandle> backings_;               /**< BackingId = index */
	std::vector<BackingId> free_backings_;
	std::deque<std::uint32_t> quarantine_;
	std::vector<std::uint32_t> all_keys_;          /**< every mkey we created */
	DriverStats stats_;
};

} // namespace mrsync::mlx5

#endif
