/* SPDX-License-Identifier: MIT */
/* The C ABI: argument checks, Result -> -errno, and the thread's last error
 * text. The hit path of mrsync_get() is Context::get_fast(), inlined here. */
#include <mrsync/mrsync.hpp>

#include <new>
#include <string>

#include "context.hpp"

using mrsync::Error;
using mrsync::Status;
using mrsync::detail::Context;

namespace {

thread_local std::string last_error;

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

} // namespace

extern "C" {

int mrsync_ctx_create(const struct mrsync_params *params, struct mrsync_ctx **out)
{
	if (!out)
		return fail(EINVAL, "out is NULL");
	*out = nullptr;
	const mrsync_params defaults = MRSYNC_PARAMS_INIT;
	try {
		auto ctx = Context::create(params ? *params : defaults);
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

int mrsync_get_stats(struct mrsync_ctx *ctx, struct mrsync_stats *out)
{
	if (!ctx || !out)
		return fail(EINVAL, !ctx ? "ctx is NULL" : "out is NULL");
	*out = impl(ctx)->stats();
	return 0;
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
