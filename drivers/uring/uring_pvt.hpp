/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to drivers/uring: the HCA's driver state -- its keys and their
 * extent lists -- and its translator over the DMA engine
 * (drivers/dma_engine), which owns the ring, the slots and the DMA.
 */
#ifndef MRSYNC_URING_PVT_HPP
#define MRSYNC_URING_PVT_HPP

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <mrsync/uring.hpp>

#include "dma_engine.hpp"

namespace mrsync::uring {

namespace detail {

struct Registration {
	std::uint64_t va = 0;
	std::uint64_t len = 0;
	std::uint32_t access = 0;
	std::vector<Extent> extents;
};

/** Calls fn(extent, va, len) for each piece of [va, va + len), which lies
 *  inside `reg`. */
template <class Fn>
void for_each_piece(const Registration &reg, std::uint64_t va, std::uint64_t len, Fn &&fn)
{
	const auto &ext = reg.extents;
	std::uint64_t off = va - reg.va;
	const std::uint64_t end = off + len;
	/* The last extent starting at or before `off`; extents[0] starts at 0. */
	auto it = std::upper_bound(ext.begin(), ext.end(), off,
				   [](std::uint64_t o, const Extent &e) { return o < e.offset; });
	--it;
	for (; off < end; ++it) {
		const std::uint64_t piece = std::min(end, it->offset + it->length) - off;
		fn(*it, reg.va + off, piece);
		off += piece;
	}
}

} // namespace detail

/**
 * The driver half of the HCA. Locks, in the order they nest: control (the
 * driver operations), then the engine's (dma_engine.hpp). `regs` changes
 * under both the control lock and the engine's submission lock, so the
 * translator (submission lock) and the driver operations (control lock)
 * each read it under one.
 */
struct Hca::Impl final : dma::Translator {
	/** Resolves key + [va, va + len) through the key's extent list. */
	int translate(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool into_memory,
		      std::vector<dma::Piece> &out) override;
	/** Checks that `extents` cover [from, to) of `reg` contiguously, each
	 *  served by nothing or by a pinned backing that covers it. */
	Status check_translation(const detail::Registration &reg, std::span<const Extent> extents,
				 std::uint64_t from, std::uint64_t to);

	std::mutex control_mu;
	std::uint32_t next_key = 1;
	std::unordered_map<std::uint32_t, detail::Registration> regs;
	std::atomic<std::uint32_t> registrations{0};
	/* Declared last, destroyed first: it drains DMA before regs go. */
	std::unique_ptr<dma::Engine> engine;
};

} // namespace mrsync::uring

#endif
