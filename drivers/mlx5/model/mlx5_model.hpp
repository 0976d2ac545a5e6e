/* SPDX-License-Identifier: MIT */
/**
 * @file
 * Mlx5Model: a MODEL of an mlx5 device's memory keys, for the host tests
 * (there is no ConnectX on these machines). It implements the seam
 * (device.hpp) and enforces what shared/MLX5.md §5(b) lists:
 *  - keys: index << 8 | tag, indices reused LIFO, tag 0 at creation -- so a
 *    stale key can name a new object, as on hardware -- and changed only by
 *    a UMR with the MKEY mask bit on a key made with UPDATE_TAG;
 *  - post-time checks: the bytes decode as a UMR (umr_wqe.hpp), INLINE set,
 *    KLMs within the inline capacity, allowed mask bits only, QP in RTS, SQ
 *    slots, byte_count <= 2 GiB, LEN == sum of the KLMs (the rdma-core 44
 *    int overflow would break it);
 *  - timing: a UMR takes effect at a random moment between post and its CQE;
 *    WQEs run in order, except that a WQE without INITIATOR_SMALL_FENCE after
 *    a UMR may take effect before it (recorded as a violation at post);
 *  - translation per packet (MTU), walking KLMs with key, tag, free state,
 *    access (indirect key and leaf), bounds and depth <= max_indirection;
 *    a null MR discards, a free key refuses;
 *  - failures: a refused packet fails the request (REM_ACCESS_ERR) and puts
 *    the requester's PeerQp in error; UMR faults give an error CQE, the QP
 *    goes to ERR and later WQEs are flushed;
 *  - driver bugs it catches (violations()): dereg of an MR a live key still
 *    names, a KLM that reaches a deregistered-then-reused key, a missing
 *    fence bit.
 * Real memory: each leaf MR is a fixed-buffer slot of the io_uring DMA
 * engine (drivers/dma_engine), which the uring HCA uses too. The model is
 * the engine's translator: each packet is one engine request, translated by
 * the KLM walk under the engine's submission lock into pieces of leaf slots,
 * and moved by READ_FIXED/WRITE_FIXED into them, so a stale translation
 * really writes into pages the application no longer sees.
 * Dereg empties the slot and waits for its release tag.
 * Thread safety: every call may come from any thread (one model lock).
 */
#ifndef MRSYNC_MLX5_MODEL_HPP
#define MRSYNC_MLX5_MODEL_HPP

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "device.hpp"
#include "umr_wqe.hpp"

namespace mrsync::mlx5 {

struct ModelOptions {
	std::uint64_t seed = 1;
	std::uint32_t max_indirection = 3;
	std::uint32_t umr_max_klms = kUmrKlms;
	std::uint32_t sq_wqebbs = 256;
	std::uint32_t mtu = 4096;
	/** Chance (percent) that a pending UMR takes effect at each packet or poll. */
	unsigned apply_percent = 30;
	/** Fail about one UMR in this many at random (0: only inject_umr_failures),
	 *  alternating the key left unchanged and left free. */
	unsigned fault_one_in = 0;
	/** The benchmark's mode: MRs are bookkeeping only (nothing pinned, no
	 *  io_uring), so registrations of any size cost no memory; DMA through
	 *  them is refused. */
	bool no_memory = false;
	/* The hardware unknowns (MLX5.md §5(b)7, settled by test/hw/mlx5). */
	bool leaf_needs_remote_rights = true; /**< a leaf needs the remote right too */
	bool tear_per_entry = false;          /**< a packet may straddle a UMR between entries */
	bool umr_validates_leaves = false;    /**< a UMR naming a dead leaf fails */
	/** A free indirect key behind a KLM (a hole's poison key) refuses the
	 *  access; false: it discards writes as a null MR does ("poison
	 *  refusal", the fallback's reason: DriverOptions::poison_refused). */
	bool poison_refused = true;
	/** Keys are created with UPDATE_TAG (caps().update_tag): a UMR with the
	 *  MKEY mask bit gives the key a new tag, so its old number stops
	 *  working; false: a tag change is refused at post (EINVAL). */
	bool update_tag = true;
};

/** How an injected UMR failure leaves the key. */
enum class FaultMode { KeepKey, FreeKey };

struct ModelStats {
	std::uint64_t umrs_posted = 0;
	std::uint64_t umr_klms_posted = 0;
	std::uint64_t umr_bytes_posted = 0;
	std::uint64_t umrs_done = 0;
	std::uint64_t umr_errors = 0;
	std::uint64_t packets = 0;
	std::uint64_t packets_refused = 0;
	std::uint64_t bytes_discarded = 0;
};

/** A requester QP of the data path: in error after a refused request, every
 *  later request is flushed until reset (as on mlx5). */
struct PeerQp {
	bool error = false;
};

class Mlx5Model final : public Device {
public:
	static Result<std::unique_ptr<Mlx5Model>> create(const ModelOptions &options = {});
	~Mlx5Model() override;

	std::string_view name() const noexcept override { return "mlx5-model"; }
	Result<DeviceCaps> query_caps() override;
	Result<MrHandle> reg_mr(std::uint64_t va, std::uint64_t len, std::uint32_t access) override;
	Status dereg_mr(std::uint32_t key) override;
	Result<std::uint32_t> create_mkey(std::uint16_t max_entries) override;
	Status destroy_mkey(std::uint32_t key) override;
	Status post_wqe(std::span<const std::byte> wqe, std::uint64_t wr_id) override;
	std::size_t poll(std::span<Cqe> out) override;
	Status reset_qp() override;
	void abandon() noexcept override;

	/** An RDMA WRITE from a peer through `rkey` (remote access), packet by
	 *  packet. @return an ibv_wc_status: 0, kWcRemAccessErr, kWcWrFlushErr. */
	int rdma_write(PeerQp &qp, std::uint32_t rkey, std::uint64_t va,
		       std::span<const std::byte> bytes);
	/** An RDMA READ from a peer. Same results; on error `out` may hold the packets before the refused one. */
	int rdma_read(PeerQp &qp, std::uint32_t rkey, std::uint64_t va, std::span<std::byte> out);

	/** The next `n` UMRs to execute fail (error CQE), leaving their key as `mode` says. */
	void inject_umr_failures(unsigned n, FaultMode mode);
	/** ibv_alloc_null_mr: writes through it are discarded (why holes must not use one). */
	Result<MrHandle> alloc_null_mr();
	/** Runs every pending WQE now. */
	void settle();
	/** The driver bugs the model caught, one line each. */
	std::vector<std::string> violations() const;
	ModelStats stats() const;

	struct Impl;

private:
	explicit Mlx5Model(std::unique_ptr<Impl> impl) noexcept;
	std::unique_ptr<Impl> impl_;
};

} // namespace mrsync::mlx5

#endif
