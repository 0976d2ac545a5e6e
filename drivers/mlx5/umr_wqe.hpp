/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/mlx5: the raw UMR WQE (MLX5.md §1, "keys addressed by
 * VA"). libmlx5 44's builders never set START_ADDR, so the driver builds the
 * WQE itself and posts it with mlx5dv_wr_raw_wqe:
 *
 *   ctrl seg (16 B) | UMR ctrl seg (48 B) | mkey context seg (64 B) | KLMs (16 B each,
 *   padded with zero entries to a multiple of 4, so the WQE is whole 64-byte blocks)
 *
 * The layouts are mlx5dv.h's structs (static_assert'ed in umr_wqe.cpp).
 * decode_umr() reads the same bytes back; the model uses it, so the model
 * sees exactly what the hardware would.
 * Thread safety: pure functions.
 */
#ifndef MRSYNC_MLX5_UMR_WQE_HPP
#define MRSYNC_MLX5_UMR_WQE_HPP

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <mrsync/result.hpp>

namespace mrsync::mlx5 {

/** One KLM entry: [addr, addr + len) of the key `key` (byte_count <= 2 GiB). */
struct Klm {
	std::uint32_t key = 0;
	std::uint64_t addr = 0;
	std::uint32_t len = 0;

	friend bool operator==(const Klm &, const Klm &) = default;
};

inline constexpr std::size_t kUmrHeaderBytes = 16 + 48 + 64;
inline constexpr std::uint64_t kMaxKlmBytes = 1ull << 31;
/** KLMs per UMR the driver uses: libmlx5's own capacity for a 1 KiB WQE
 *  ((max_inline_data + 4) / 16 with the 828-byte inline size we ask for). */
inline constexpr std::uint32_t kUmrKlms = 52;

/** What one UMR says. */
struct UmrSpec {
	std::uint32_t mkey = 0;
	std::uint32_t qpn = 0;
	std::uint16_t wqe_index = 0;
	std::uint32_t access = 0;        /**< MRSYNC_ACCESS_* */
	std::uint64_t start_addr = 0;
	std::uint64_t len = 0;
	/** Make the key free (the kernel's revoke UMR): no KLMs, all DMA refused. */
	bool invalidate = false;
	/** INITIATOR_SMALL_FENCE: this WQE waits for the previous UMR's effect
	 *  (libmlx5 sets it after a UMR itself; a raw WQE must). */
	bool small_fence = true;
	bool signaled = true;
	bool inline_klms = true;         /**< tests clear it to see the post-time check */
	/** The key's tag after this UMR (mkey_7_0; needs caps().update_tag);
	 *  kKeepTag: the tag `mkey` has. `mkey` is always the key as it is now. */
	std::uint16_t new_tag = kKeepTag;
	static constexpr std::uint16_t kKeepTag = 0x100;
};

/** Bytes of a UMR WQE carrying n KLMs. */
constexpr std::size_t umr_wqe_bytes(std::size_t n)
{
	return kUmrHeaderBytes + 16 * ((n + 3) / 4 * 4);
}

/** Builds the WQE. `len` is computed by the caller in 64 bits: the rdma-core
 *  44 builder summed it in an int (wrong for keys of 2 GiB or more). */
std::vector<std::byte> build_umr(const UmrSpec &spec, std::span<const Klm> klms);

/** A WQE read back by the PRM layouts. */
struct DecodedUmr {
	std::uint8_t opcode = 0;
	std::uint16_t wqe_index = 0;
	std::uint32_t qpn = 0;
	std::uint32_t ds = 0;            /**< 16-byte units */
	std::uint8_t fm_ce_se = 0;
	std::uint32_t mkey = 0;          /**< from the ctrl seg's imm */
	std::uint8_t umr_flags = 0;
	std::uint32_t klm_octowords = 0;
	std::uint64_t mkey_mask = 0;
	bool free = false;
	std::uint8_t access_flags = 0;   /**< mkey context access bits */
	std::uint32_t access = 0;        /**< the same as MRSYNC_ACCESS_* */
	std::uint32_t mkey_tag = 0;      /**< qpn_mkey & 0xff */
	std::uint64_t start_addr = 0;
	std::uint64_t len = 0;
	std::vector<Klm> klms;           /**< the non-padding entries */
};

/** Decodes; EINVAL (with the reason) if the bytes are not a UMR WQE. */
Result<DecodedUmr> decode_umr(std::span<const std::byte> wqe);

} // namespace mrsync::mlx5

#endif
