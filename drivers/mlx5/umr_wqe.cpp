/* SPDX-License-Identifier: MIT */
/* The raw UMR WQE, built and decoded with mlx5dv.h's own structs. The
 * static_asserts pin what the code relies on: the segment sizes (a WQE of
 * whole 64-byte blocks, the 16-byte DS unit) and the fields' offsets as the
 * PRM lays them out, so a header that moved them stops the build. */
#include "umr_wqe.hpp"

#include <endian.h>
#include <infiniband/mlx5dv.h>

#include <cstddef>
#include <cstring>

#include <mrsync/mrsync.h>

#include "format.hpp"

namespace mrsync::mlx5 {

static_assert(sizeof(mlx5_wqe_ctrl_seg) == 16);
static_assert(offsetof(mlx5_wqe_ctrl_seg, qpn_ds) == 4);
static_assert(offsetof(mlx5_wqe_ctrl_seg, fm_ce_se) == 11);
static_assert(offsetof(mlx5_wqe_ctrl_seg, imm) == 12);
static_assert(sizeof(mlx5_wqe_umr_ctrl_seg) == 48);
static_assert(offsetof(mlx5_wqe_umr_ctrl_seg, klm_octowords) == 4);
static_assert(offsetof(mlx5_wqe_umr_ctrl_seg, mkey_mask) == 8);
static_assert(sizeof(mlx5_wqe_mkey_context_seg) == 64);
static_assert(offsetof(mlx5_wqe_mkey_context_seg, access_flags) == 2);
static_assert(offsetof(mlx5_wqe_mkey_context_seg, qpn_mkey) == 4);
static_assert(offsetof(mlx5_wqe_mkey_context_seg, start_addr) == 16);
static_assert(offsetof(mlx5_wqe_mkey_context_seg, len) == 24);
static_assert(offsetof(mlx5_wqe_mkey_context_seg, translations_octword_size) == 52);
static_assert(sizeof(mlx5_wqe_umr_klm_seg) == 16);
static_assert(kUmrHeaderBytes == sizeof(mlx5_wqe_ctrl_seg) + sizeof(mlx5_wqe_umr_ctrl_seg) +
					 sizeof(mlx5_wqe_mkey_context_seg));
static_assert(umr_wqe_bytes(kUmrKlms) <= 16 * MLX5_SEND_WQE_BB, "a UMR fits in 1 KiB");
static_assert(umr_wqe_bytes(1) % MLX5_SEND_WQE_BB == 0);

namespace {

using ::mrsync::detail::fmt;

constexpr std::uint64_t kAccessMask = MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_LOCAL_WRITE |
				      MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_REMOTE_READ |
				      MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_REMOTE_WRITE |
				      MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_ATOMIC;

std::uint8_t to_mkc_access(std::uint32_t access)
{
	std::uint8_t f = MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_LOCAL_READ;
	if (access & MRSYNC_ACCESS_LOCAL_WRITE)
		f |= MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_LOCAL_WRITE;
	if (access & MRSYNC_ACCESS_REMOTE_WRITE)
		f |= MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_REMOTE_WRITE;
	if (access & MRSYNC_ACCESS_REMOTE_READ)
		f |= MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_REMOTE_READ;
	return f;
}

std::uint32_t from_mkc_access(std::uint8_t f)
{
	std::uint32_t a = 0;
	if (f & MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_LOCAL_WRITE)
		a |= MRSYNC_ACCESS_LOCAL_WRITE;
	if (f & MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_REMOTE_WRITE)
		a |= MRSYNC_ACCESS_REMOTE_WRITE;
	if (f & MLX5_WQE_MKEY_CONTEXT_ACCESS_FLAGS_REMOTE_READ)
		a |= MRSYNC_ACCESS_REMOTE_READ;
	return a;
}

} // namespace

std::vector<std::byte> build_umr(const UmrSpec &spec, std::span<const Klm> klms)
{
	const std::size_t n = spec.invalidate ? 0 : klms.size();
	std::vector<std::byte> wqe(umr_wqe_bytes(n));
	auto *ctrl = reinterpret_cast<mlx5_wqe_ctrl_seg *>(wqe.data());
	auto *umr = reinterpret_cast<mlx5_wqe_umr_ctrl_seg *>(wqe.data() + sizeof *ctrl);
	auto *mkc = reinterpret_cast<mlx5_wqe_mkey_context_seg *>(wqe.data() + sizeof *ctrl +
								   sizeof *umr);
	auto *klm = reinterpret_cast<mlx5_wqe_umr_klm_seg *>(wqe.data() + kUmrHeaderBytes);

	std::uint8_t fm_ce_se = spec.signaled ? MLX5_WQE_CTRL_CQ_UPDATE : 0;
	if (spec.small_fence)
		fm_ce_se |= MLX5_WQE_CTRL_INITIATOR_SMALL_FENCE;
	mlx5dv_set_ctrl_seg(ctrl, spec.wqe_index, MLX5_OPCODE_UMR, 0, spec.qpn, fm_ce_se,
			    std::uint8_t(wqe.size() / 16), 0, htobe32(spec.mkey));

	umr->flags = spec.inline_klms ? MLX5_WQE_UMR_CTRL_FLAG_INLINE : 0;
	umr->klm_octowords = htobe16(std::uint16_t((n + 3) / 4 * 4));
	std::uint64_t mask = MLX5_WQE_UMR_CTRL_MKEY_MASK_FREE | MLX5_WQE_UMR_CTRL_MKEY_MASK_MKEY;
	if (!spec.invalidate)
		mask |= MLX5_WQE_UMR_CTRL_MKEY_MASK_LEN | MLX5_WQE_UMR_CTRL_MKEY_MASK_START_ADDR |
			kAccessMask;
	umr->mkey_mask = htobe64(mask);

	mkc->free = spec.invalidate ? MLX5_WQE_MKEY_CONTEXT_FREE : 0;
	mkc->access_flags = spec.invalidate ? 0 : to_mkc_access(spec.access);
	const std::uint32_t tag = spec.new_tag == UmrSpec::kKeepTag ? spec.mkey & 0xff : spec.new_tag & 0xff;
	mkc->qpn_mkey = htobe32(0xffffff00u | tag);
	mkc->start_addr = htobe64(spec.start_addr);
	mkc->len = htobe64(spec.len);
	mkc->translations_octword_size = htobe32(std::uint32_t((n + 3) / 4 * 4));
	for (std::size_t i = 0; i < n; ++i) {
		klm[i].byte_count = htobe32(klms[i].len);
		klm[i].mkey = htobe32(klms[i].key);
		klm[i].address = htobe64(klms[i].addr);
	}
	return wqe;
}

Result<DecodedUmr> decode_umr(std::span<const std::byte> wqe)
{
	if (wqe.size() < kUmrHeaderBytes || wqe.size() % 16)
		return make_error(EINVAL, fmt("UMR WQE of %zu bytes: shorter than the %zu-byte "
					      "header or not whole 16-byte units",
					      wqe.size(), kUmrHeaderBytes));
	mlx5_wqe_ctrl_seg ctrl;
	mlx5_wqe_umr_ctrl_seg umr;
	mlx5_wqe_mkey_context_seg mkc;
	std::memcpy(&ctrl, wqe.data(), sizeof ctrl);
	std::memcpy(&umr, wqe.data() + sizeof ctrl, sizeof umr);
	std::memcpy(&mkc, wqe.data() + sizeof ctrl + sizeof umr, sizeof mkc);
	DecodedUmr d;
	const std::uint32_t opmod_idx_opcode = be32toh(ctrl.opmod_idx_opcode);
	d.opcode = std::uint8_t(opmod_idx_opcode);
	d.wqe_index = std::uint16_t(opmod_idx_opcode >> 8);
	d.qpn = be32toh(ctrl.qpn_ds) >> 8;
	d.ds = be32toh(ctrl.qpn_ds) & 0x3f;
	d.fm_ce_se = ctrl.fm_ce_se;
	d.mkey = be32toh(ctrl.imm);
	d.umr_flags = umr.flags;
	d.klm_octowords = be16toh(umr.klm_octowords);
	d.mkey_mask = be64toh(umr.mkey_mask);
	d.free = mkc.free & MLX5_WQE_MKEY_CONTEXT_FREE;
	d.access_flags = mkc.access_flags;
	d.access = from_mkc_access(mkc.access_flags);
	d.mkey_tag = be32toh(mkc.qpn_mkey) & 0xff;
	d.start_addr = be64toh(mkc.start_addr);
	d.len = be64toh(mkc.len);
	if (d.opcode != MLX5_OPCODE_UMR)
		return make_error(EINVAL, fmt("WQE opcode %#x is not UMR", d.opcode));
	if (d.ds * 16 != wqe.size())
		return make_error(EINVAL, fmt("ctrl seg DS %u does not match the %zu-byte WQE", d.ds,
					      wqe.size()));
	if (kUmrHeaderBytes + 16ull * d.klm_octowords > wqe.size())
		return make_error(EINVAL, fmt("klm_octowords %u overruns the %zu-byte WQE",
					      d.klm_octowords, wqe.size()));
	for (std::uint32_t i = 0; i < d.klm_octowords; ++i) {
		mlx5_wqe_umr_klm_seg k;
		std::memcpy(&k, wqe.data() + kUmrHeaderBytes + 16 * i, sizeof k);
		if (k.byte_count == 0 && k.mkey == 0 && k.address == 0)
			continue; /* padding */
		d.klms.push_back({be32toh(k.mkey), be64toh(k.address), be32toh(k.byte_count)});
	}
	return d;
}

} // namespace mrsync::mlx5
