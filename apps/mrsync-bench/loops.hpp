/* SPDX-License-Identifier: MIT */
/* mrsync-bench: the timed loops. Each is a non-inlined function with C
 * linkage, so its name is stable for
 *   valgrind --tool=callgrind --toggle-collect=<name> mrsync-bench --only ...
 * and Ir / iterations is the instruction count of one operation (loop
 * overhead included: about 5 instructions). The UCX loops live in ucx_peer.c.
 * Each returns a checksum of the keys, or UINT64_MAX when an operation failed. */
#ifndef MRSYNC_BENCH_LOOPS_HPP
#define MRSYNC_BENCH_LOOPS_HPP

#include <cstdint>

#include <mrsync/mrsync.hpp>

#include "access.h"
#include "exact_cache.hpp"

extern "C" {

/** mrsync_get + mrsync_put (C ABI) on a[(start + i) & mask], i < n. */
std::uint64_t mrsync_bench_hit_loop(mrsync_ctx *ctx, const bench_access *a, std::uint64_t mask,
				    std::uint64_t start, std::uint64_t n);

/** mrsync_get_mru + mrsync_put_mru (the inline hit path, mrsync/mru.h) on
 *  a[(start + i) & mask], i < n: meant for lookups inside one buffer. */
std::uint64_t mrsync_bench_hit_mru_loop(mrsync_ctx *ctx, const bench_access *a,
					std::uint64_t mask, std::uint64_t start, std::uint64_t n);

/** mrsync::Context::get (Result<Registration>, put by the destructor). */
std::uint64_t mrsync_bench_hit_cpp_loop(mrsync::Context &ctx, const bench_access *a,
					std::uint64_t mask, std::uint64_t start, std::uint64_t n);

/** ExactCache::find on the same lookups. */
std::uint64_t mrsync_bench_exact_hit_loop(const mrsync::bench::ExactCache &cache,
					  const bench_access *a, std::uint64_t mask,
					  std::uint64_t start, std::uint64_t n);

/** mrsync_get + mrsync_put of [base + (start + i) * stride, +len), i < n:
 *  ranges not cached (as long as they are fresh). */
std::uint64_t mrsync_bench_miss_loop(mrsync_ctx *ctx, const char *base, std::uint64_t stride,
				     std::uint64_t len, std::uint64_t start, std::uint64_t n);

/** The control: 48 rounds of 4 independent register adds per operation. */
std::uint64_t mrsync_bench_alu_loop(std::uint64_t start, std::uint64_t n);

/** mrsync_resync (when `resync`), then mrsync_get + mrsync_put of the page
 *  at each of pages[0, n): one sample of the resync rows (resync_profile.cpp). */
std::uint64_t mrsync_bench_resync_once(mrsync_ctx *ctx, char *const *pages, std::uint64_t n,
				       bool resync);

} // extern "C"

#endif
