/* SPDX-License-Identifier: MIT */
#include "loops.hpp"

#include <mrsync/mru.h>

namespace {
constexpr std::uint32_t kAccess = MRSYNC_ACCESS_LOCAL_WRITE;
constexpr std::uint64_t kFailed = UINT64_MAX;

using GetFn = int (*)(mrsync_ctx *, const void *, size_t, uint32_t, mrsync_reg *);
using PutFn = int (*)(mrsync_ctx *, mrsync_reg *);

/* get + put on a[(start + i) & mask], i < n; Get and Put inlined. */
template <GetFn Get, PutFn Put>
[[gnu::always_inline]] inline std::uint64_t get_put_loop(mrsync_ctx *ctx, const bench_access *a,
							 std::uint64_t mask, std::uint64_t start,
							 std::uint64_t n)
{
	std::uint64_t sum = 0;
	for (std::uint64_t i = start; i < start + n; ++i) {
		const bench_access &e = a[i & mask];
		mrsync_reg reg;
		if (Get(ctx, e.addr, e.len, kAccess, &reg) != 0) [[unlikely]]
			return kFailed;
		sum += reg.lkey;
		Put(ctx, &reg);
	}
	return sum;
}
} // namespace

extern "C" {

__attribute__((noinline)) std::uint64_t mrsync_bench_hit_loop(mrsync_ctx *ctx,
							      const bench_access *a,
							      std::uint64_t mask,
							      std::uint64_t start, std::uint64_t n)
{
	return get_put_loop<mrsync_get, mrsync_put>(ctx, a, mask, start, n);
}

__attribute__((noinline)) std::uint64_t mrsync_bench_hit_mru_loop(mrsync_ctx *ctx,
								  const bench_access *a,
								  std::uint64_t mask,
								  std::uint64_t start, std::uint64_t n)
{
	return get_put_loop<mrsync_get_mru, mrsync_put_mru>(ctx, a, mask, start, n);
}

__attribute__((noinline)) std::uint64_t mrsync_bench_hit_cpp_loop(mrsync::Context &ctx,
								  const bench_access *a,
								  std::uint64_t mask,
								  std::uint64_t start,
								  std::uint64_t n)
{
	std::uint64_t sum = 0;
	for (std::uint64_t i = start; i < start + n; ++i) {
		const bench_access &e = a[i & mask];
		auto reg = ctx.get(e.addr, e.len, kAccess);
		if (!reg) [[unlikely]]
			return kFailed;
		sum += reg->lkey();
	}
	return sum;
}

__attribute__((noinline)) std::uint64_t mrsync_bench_exact_hit_loop(
	const mrsync::bench::ExactCache &cache, const bench_access *a, std::uint64_t mask,
	std::uint64_t start, std::uint64_t n)
{
	std::uint64_t sum = 0;
	for (std::uint64_t i = start; i < start + n; ++i) {
		const bench_access &e = a[i & mask];
		const std::uint32_t *key = cache.find(e.addr, e.len);
		if (!key) [[unlikely]]
			return kFailed;
		sum += *key;
	}
	return sum;
}

__attribute__((noinline)) std::uint64_t mrsync_bench_miss_loop(mrsync_ctx *ctx, const char *base,
							       std::uint64_t stride,
							       std::uint64_t len,
							       std::uint64_t start, std::uint64_t n)
{
	std::uint64_t sum = 0;
	for (std::uint64_t i = start; i < start + n; ++i) {
		mrsync_reg reg;
		if (mrsync_get(ctx, base + i * stride, len, kAccess, &reg) != 0) [[unlikely]]
			return kFailed;
		sum += reg.lkey;
		mrsync_put(ctx, &reg);
	}
	return sum;
}

__attribute__((noinline)) std::uint64_t mrsync_bench_alu_loop(std::uint64_t start,
							      std::uint64_t n)
{
	std::uint64_t a = start, b = 1, c = 2, d = 3;
	for (std::uint64_t i = 0; i < n; ++i)
		for (int r = 0; r < 48; ++r)
			asm volatile("add $1, %0\n\tadd $1, %1\n\tadd $1, %2\n\tadd $1, %3"
				     : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
	return a + b + c + d;
}

__attribute__((noinline)) std::uint64_t mrsync_bench_resync_once(mrsync_ctx *ctx,
								  char *const *pages,
								  std::uint64_t n, bool resync)
{
	if (resync && mrsync_resync(ctx) != 0) [[unlikely]]
		return kFailed;
	std::uint64_t sum = 0;
	for (std::uint64_t i = 0; i < n; ++i) {
		mrsync_reg reg;
		if (mrsync_get(ctx, pages[i], 4096, MRSYNC_ACCESS_ALL, &reg) != 0) [[unlikely]]
			return kFailed;
		sum += reg.lkey;
		mrsync_put(ctx, &reg);
	}
	return sum;
}

} // extern "C"
