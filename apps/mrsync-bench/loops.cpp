/* SPDX-License-Identifier: MIT */
#include "loops.hpp"

namespace {
constexpr std::uint32_t kAccess = MRSYNC_ACCESS_LOCAL_WRITE;
constexpr std::uint64_t kFailed = UINT64_MAX;
} // namespace

extern "C" {

__attribute__((noinline)) std::uint64_t mrsync_bench_hit_loop(mrsync_ctx *ctx,
							      const bench_access *a,
							      std::uint64_t mask,
							      std::uint64_t start, std::uint64_t n)
{
	std::uint64_t sum = 0;
	for (std::uint64_t i = start; i < start + n; ++i) {
		const bench_access &e = a[i & mask];
		mrsync_reg reg;
		if (mrsync_get(ctx, e.addr, e.len, kAccess, &reg) != 0) [[unlikely]]
			return kFailed;
		sum += reg.lkey;
		mrsync_put(ctx, &reg);
	}
	return sum;
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

} // extern "C"
