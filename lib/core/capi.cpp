/* SPDX-License-Identifier: MIT */
/* The C ABI: argument checks, Result -> -errno, and the thread's last error
 * text. The hit path of mrsync_get() is Context::get_fast(), inlined here. */
#include <mrsync/mrsync.hpp>
#include <mrsync/mru.h>
#include <mrsync/testing.h>

#include <cstddef>
#include <new>
#include <string>

#include "capi.hpp"
#include "context.hpp"
#include "sized.hpp"

using mrsync::Error;
using mrsync::Status;
using mrsync::detail::Context;

namespace mrsync::detail {
/* Set before main() by lib/core/testing.cpp, in test programs only. */
bool test_flags_enabled = false;
} // namespace mrsync::detail

namespace {

thread_local std::string last_error;

/* The smallest params and stats a caller may pass: struct_size and the field
 * after it (mrsync.h, "Structs and their sizes"). */
constexpr std::size_t kMinParamsSize = offsetof(mrsync_params, driver);
constexpr std::size_t kMinStatsSize = sizeof(std::uint64_t);

int fail(const Error &e)
{
	last_error = e.message;
	return -e.code;
}

int fail(int code, const char *message)
{
	last_error = message;
	return -code;
}

int finish(const Status &s)
{
	return s ? 0 : fail(s.error());
}

Context *impl(mrsync_ctx *ctx)
{
	return reinterpret_cast<Context *>(ctx);
}

[[gnu::noinline]] int get_slow_path(mrsync_ctx *ctx, const void *addr, size_t len,
				     uint32_t access, mrsync_reg *out)
{
	if (!ctx || !out)
		return fail(EINVAL, !ctx ? "ctx is NULL" : "out is NULL");
	try {
		return finish(impl(ctx)->get_slow(reinterpret_cast<std::uint64_t>(addr), len, access,
						  *out));
	} catch (const std::bad_alloc &) {
		last_error.clear(); /* no message: it would need memory */
		return -ENOMEM;
	}
}

[[gnu::noinline]] int put_slow_path(mrsync_ctx *ctx, mrsync_reg *reg)
{
	if (!ctx || !reg || !reg->region)
		return fail(EINVAL, !ctx ? "ctx is NULL" : "reg or reg->region is NULL");
	return finish(impl(ctx)->put(reg->region));
}

/* The caller's params, of whatever header version, as this library's
 * struct (mrsync.h, "Structs and their sizes"); NULL gives the defaults. */
int read_params(const mrsync_params *given, mrsync_params &p)
{
	if (given) {
		if (const char *why = mrsync::detail::copy_in(given, given->struct_size,
								kMinParamsSize, p))
			return fail(EINVAL, ("params->struct_size is " +
					     std::to_string(given->struct_size) + ": " + why +
					     " (initialise with MRSYNC_PARAMS_INIT)")
						    .c_str());
		p.struct_size = sizeof p;
	}
	if ((p.flags & MRSYNC_CTX_F_TEST_ONLY_MASK) && !mrsync::detail::test_flags_enabled)
		return fail(EINVAL, "params->flags has a test-only bit set (only test programs "
				    "linked with lib/core/testing.cpp may use it)");
	return 0;
}

} // namespace

int mrsync::detail::fail_call(int code, std::string_view message) noexcept
{
	try {
		::last_error.assign(message);
	} catch (const std::bad_alloc &) {
		::last_error.clear(); /* the code still says what failed */
	}
	return -code;
}

extern "C" {

int mrsync_ctx_create(const struct mrsync_params *params, struct mrsync_ctx **out)
{
	if (!out)
		return fail(EINVAL, "out is NULL");
	*out = nullptr;
	try {
		mrsync_params p = MRSYNC_PARAMS_INIT;
		if (int rc = read_params(params, p); rc < 0)
			return rc;
		auto ctx = Context::create(p);
		if (!ctx)
			return fail(ctx.error());
		*out = reinterpret_cast<mrsync_ctx *>(ctx.value().release());
		return 0;
	} catch (const std::bad_alloc &) {
		return fail(ENOMEM, "out of memory creating the context");
	}
}

void mrsync_ctx_destroy(struct mrsync_ctx **ctx)
{
	if (!ctx || !*ctx)
		return;
	delete impl(*ctx);
	*ctx = nullptr;
}

int mrsync_get(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access,
	       struct mrsync_reg *out)
{
	/* Only the hit path here, so it needs no stack frame; everything else
	 * is a tail call. */
	if (ctx && out) [[likely]]
		if (impl(ctx)->get_fast(reinterpret_cast<std::uint64_t>(addr), len, access, *out))
			[[likely]]
			return 0;
	return get_slow_path(ctx, addr, len, access, out);
}

int mrsync_get_mru_slow(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access,
			struct mrsync_reg *out)
{
	/* mrsync_get() that also keeps what it hands out as the thread's entry
	 * (the slow path always does): plain mrsync_get() callers do not pay
	 * for the stores. */
	if (ctx && out) [[likely]]
		if (impl(ctx)->get_fast<true>(reinterpret_cast<std::uint64_t>(addr), len, access,
					      *out)) [[likely]]
			return 0;
	return get_slow_path(ctx, addr, len, access, out);
}

int mrsync_put(struct mrsync_ctx *ctx, struct mrsync_reg *reg)
{
	if (ctx && reg && reg->region && impl(ctx)->put_fast(reg->region)) [[likely]]
		return 0;
	return put_slow_path(ctx, reg);
}

int mrsync_hint(struct mrsync_ctx *ctx, const void *addr, size_t len, uint32_t access)
{
	if (!ctx)
		return fail(EINVAL, "ctx is NULL");
	try {
		return finish(impl(ctx)->hint(reinterpret_cast<std::uint64_t>(addr), len, access));
	} catch (const std::bad_alloc &) {
		return fail(ENOMEM, "out of memory");
	}
}

int mrsync_notify_unmap(struct mrsync_ctx *ctx, const void *addr, size_t len)
{
	if (!ctx)
		return fail(EINVAL, "ctx is NULL");
	return finish(impl(ctx)->notify_unmap(reinterpret_cast<std::uint64_t>(addr), len));
}

uint64_t mrsync_generation(const struct mrsync_ctx *ctx)
{
	return ctx ? reinterpret_cast<const Context *>(ctx)->generation() : 0;
}

int mrsync_generation_words(const struct mrsync_ctx *ctx, const uint64_t **words, int max)
{
	if (!ctx || !words || max < 0)
		return fail(EINVAL, !ctx ? "ctx is NULL" : !words ? "words is NULL" : "max is negative");
	return reinterpret_cast<const Context *>(ctx)->generation_words(words, max);
}

int mrsync_for_each_region(struct mrsync_ctx *ctx,
			   void (*fn)(void *arg, const struct mrsync_region_info *info), void *arg)
{
	if (!ctx || !fn)
		return fail(EINVAL, !ctx ? "ctx is NULL" : "fn is NULL");
	return impl(ctx)->for_each_region(fn, arg);
}

int mrsync_resync(struct mrsync_ctx *ctx)
{
	if (!ctx)
		return fail(EINVAL, "ctx is NULL");
	return finish(impl(ctx)->resync());
}

int mrsync_compact(struct mrsync_ctx *ctx)
{
	if (!ctx)
		return fail(EINVAL, "ctx is NULL");
	auto n = impl(ctx)->compact();
	return n ? *n : fail(n.error());
}

int mrsync_get_stats(struct mrsync_ctx *ctx, struct mrsync_stats *out, size_t out_size)
{
	if (!ctx || !out || out_size < kMinStatsSize)
		return fail(EINVAL, !ctx ? "ctx is NULL"
				    : !out ? "out is NULL"
					   : "out_size is below 8: pass sizeof(struct mrsync_stats)");
	mrsync::detail::copy_out(impl(ctx)->stats(), out, out_size);
	return 0;
}

int mrsync_test_flags_enabled(void)
{
	return mrsync::detail::test_flags_enabled;
}

const char *mrsync_last_error(void)
{
	return last_error.c_str();
}

const char *mrsync_driver_name(const struct mrsync_ctx *ctx)
{
	if (!ctx)
		return nullptr;
	/* names are string literals owned by the driver */
	return const_cast<Context *>(reinterpret_cast<const Context *>(ctx))->driver().name().data();
}

} // extern "C"

mrsync::Driver &mrsync::driver_of(mrsync_ctx *ctx)
{
	return impl(ctx)->driver();
}
