/* SPDX-License-Identifier: MIT */
/* The C ABI of mrsync/subscribe.h: argument checks naming the argument,
 * Result -> -errno through the thread's last error (capi.hpp). */
#include <mrsync/mrsync.h>
#include <mrsync/subscribe.h>
#include <mrsync/testing.h> /* MRSYNC_WATCHER_F_TEST_NO_WAKEUP */

#include <cinttypes>
#include <new>

#include "capi.hpp"
#include "context.hpp"
#include "format.hpp"
#include "subscription.hpp"

using mrsync::Range;
using mrsync::detail::fail_call;
using mrsync::detail::fmt;
using mrsync::detail::Watcher;

namespace mrsync::detail {
extern bool test_flags_enabled; /* capi.cpp; true once lib/core/testing.cpp is linked */
}

namespace {

Watcher *impl(mrsync_watcher *w)
{
	return reinterpret_cast<Watcher *>(w);
}

int fail(const mrsync::Error &e)
{
	return fail_call(e.code, e.message);
}

/* [addr, addr + len) rounded out to pages, or EINVAL naming the argument. */
mrsync::Result<Range> pages_of(const void *addr, size_t len)
{
	const auto page = std::uint64_t(sysconf(_SC_PAGESIZE));
	const auto start = reinterpret_cast<std::uint64_t>(addr);
	if (!len)
		return mrsync::make_error(EINVAL, "len is 0");
	if (start + len < start || start + len > UINT64_MAX - page)
		return mrsync::make_error(EINVAL, fmt("addr, len: [0x%" PRIx64 ", +%zu) wraps",
						      start, len));
	return Range{start & ~(page - 1), (start + len + page - 1) & ~(page - 1)};
}

/* Runs `body` (a Result-returning call), turning bad_alloc into -ENOMEM. */
template <class F>
int guarded(F body)
{
	try {
		return body();
	} catch (const std::bad_alloc &) {
		return fail_call(ENOMEM, "out of memory");
	}
}

} // namespace

extern "C" int mrsync_watcher_create(uint32_t sources, mrsync_watcher **out)
{
	if (!out)
		return fail_call(EINVAL, "out is NULL");
	auto wakeups = Watcher::Wakeups::on;
	if (sources & MRSYNC_WATCHER_F_TEST_NO_WAKEUP) {
		if (!mrsync::detail::test_flags_enabled)
			return fail_call(EINVAL, "sources has a test-only bit set (only test "
						 "programs linked with lib/core/testing.cpp may use it)");
		wakeups = Watcher::Wakeups::test_off;
		sources &= ~uint32_t(MRSYNC_WATCHER_F_TEST_NO_WAKEUP);
	}
	if (sources & ~uint32_t(MRSYNC_SOURCE_KMOD | MRSYNC_SOURCE_UFFD | MRSYNC_SOURCE_MANUAL |
				MRSYNC_SOURCE_DPDK))
		return fail_call(EINVAL, fmt("sources: unknown bits 0x%x", sources));
	return guarded([&] {
		auto w = Watcher::create(sources, wakeups);
		if (!w)
			return fail(w.error());
		*out = reinterpret_cast<mrsync_watcher *>(w->release());
		return 0;
	});
}

extern "C" int mrsync_ctx_watcher(mrsync_ctx *ctx, mrsync_watcher **out)
{
	if (!ctx || !out)
		return fail_call(EINVAL, !ctx ? "ctx is NULL" : "out is NULL");
	return guarded([&] {
		auto w = reinterpret_cast<mrsync::detail::Context *>(ctx)->watcher();
		if (!w)
			return fail(w.error());
		*out = reinterpret_cast<mrsync_watcher *>(*w);
		return 0;
	});
}

extern "C" void mrsync_watcher_destroy(mrsync_watcher **watcher)
{
	if (!watcher || !*watcher)
		return;
	/* The context's own: it goes with mrsync_ctx_destroy(). Only the
	 * caller's pointer is dropped, so a cleanup path written for either
	 * kind of watcher does no harm. */
	if (!impl(*watcher)->borrowed())
		delete impl(*watcher);
	*watcher = nullptr;
}

extern "C" int mrsync_subscribe(mrsync_watcher *watcher, const void *addr, size_t len,
				mrsync_change_fn fn, void *arg, uint64_t *id)
{
	if (!watcher || !fn)
		return fail_call(EINVAL, !watcher ? "watcher is NULL" : "fn is NULL");
	auto range = pages_of(addr, len);
	if (!range)
		return fail(range.error());
	return guarded([&] {
		auto got = impl(watcher)->subscribe(*range, fn, arg);
		if (!got)
			return fail(got.error());
		if (id)
			*id = *got;
		return 0;
	});
}

extern "C" int mrsync_unsubscribe(mrsync_watcher *watcher, uint64_t id)
{
	if (!watcher)
		return fail_call(EINVAL, "watcher is NULL");
	auto ok = impl(watcher)->unsubscribe(id);
	return ok ? 0 : fail(ok.error());
}

extern "C" int mrsync_watcher_poll(mrsync_watcher *watcher)
{
	if (!watcher)
		return fail_call(EINVAL, "watcher is NULL");
	return guarded([&] {
		auto calls = impl(watcher)->poll();
		return calls ? *calls : fail(calls.error());
	});
}

extern "C" int mrsync_watcher_notify_unmap(mrsync_watcher *watcher, const void *addr, size_t len)
{
	if (!watcher)
		return fail_call(EINVAL, "watcher is NULL");
	auto range = pages_of(addr, len);
	if (!range)
		return fail(range.error());
	auto ok = impl(watcher)->notify_unmap(*range);
	return ok ? 0 : fail(ok.error());
}

extern "C" int mrsync_watcher_fd(mrsync_watcher *watcher, int *fd)
{
	if (!watcher || !fd)
		return fail_call(EINVAL, !watcher ? "watcher is NULL" : "fd is NULL");
	return guarded([&] {
		auto got = impl(watcher)->fd();
		if (!got)
			return fail(got.error());
		*fd = *got;
		return 0;
	});
}
