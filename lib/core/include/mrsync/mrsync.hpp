/* SPDX-License-Identifier: MIT */
/**
 * @file
 * mrsync C++ API: RAII over the C ABI of mrsync.h. A Context owns the cache;
 * a Registration owns one hold and releases it when destroyed.
 *
 * C++17 is enough for this header (the driver API of driver.hpp and
 * uring.hpp needs C++20). Errors as Result<T> (result.hpp) carrying the
 * errno and the message of mrsync_last_error().
 */
#ifndef MRSYNC_HPP
#define MRSYNC_HPP

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

#include <mrsync/mrsync.h>
#include <mrsync/result.hpp>

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)
namespace mrsync {

/** The driver interface (mrsync/driver.hpp, C++20). */
class Driver;

/** The C context's driver (for driver-specific calls such as the uring
 *  HCA's DMA API: include mrsync/uring.hpp and dynamic_cast). Thread-safe;
 *  valid while the context lives. */
Driver &driver_of(mrsync_ctx *ctx);

namespace detail {
/** The Error of a failed C call: never throws (Context::get() is noexcept),
 *  an allocation failure only loses the message. */
inline Error last_error(int rc) noexcept
{
	Error e;
	e.code = -rc;
	try {
		e.message = mrsync_last_error();
	} catch (const std::bad_alloc &) {
	}
	return e;
}
} // namespace detail

/** A registration handed out by Context::get(); move-only, put on destruction. */
class Registration {
public:
	Registration() = default;
	Registration(mrsync_ctx *ctx, const mrsync_reg &reg) noexcept : ctx_(ctx), reg_(reg) {}
	Registration(Registration &&o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)), reg_(o.reg_) {}
	Registration &operator=(Registration &&o) noexcept
	{
		if (this != &o) {
			reset();
			ctx_ = std::exchange(o.ctx_, nullptr);
			reg_ = o.reg_;
		}
		return *this;
	}
	Registration(const Registration &) = delete;
	Registration &operator=(const Registration &) = delete;
	~Registration() { reset(); }

	/** Releases the hold now (mrsync_put). */
	void reset() noexcept
	{
		if (ctx_)
			mrsync_put(std::exchange(ctx_, nullptr), &reg_);
	}

	explicit operator bool() const noexcept { return ctx_ != nullptr; }
	std::uint64_t addr() const noexcept { return reg_.addr; }
	std::uint64_t length() const noexcept { return reg_.length; }
	std::uint32_t lkey() const noexcept { return reg_.lkey; }
	std::uint32_t rkey() const noexcept { return reg_.rkey; }
	const mrsync_reg &raw() const noexcept { return reg_; }

private:
	mrsync_ctx *ctx_ = nullptr;
	mrsync_reg reg_{};
};

/** Owns a mrsync_ctx. Thread safety as in mrsync.h. */
class Context {
public:
	/** mrsync_params with every field at its default (MRSYNC_PARAMS_INIT). */
	static mrsync_params default_params() noexcept
	{
		mrsync_params p{};
		p.struct_size = sizeof p;
		return p;
	}

	/** See mrsync_ctx_create(). */
	static Result<Context> create(const mrsync_params &params = default_params())
	{
		mrsync_ctx *ctx = nullptr;
		if (int rc = mrsync_ctx_create(&params, &ctx); rc < 0)
			return detail::last_error(rc);
		return Context(ctx);
	}

	Context(Context &&o) noexcept : ctx_(std::exchange(o.ctx_, nullptr)) {}
	Context &operator=(Context &&o) noexcept
	{
		if (this != &o) {
			mrsync_ctx_destroy(&ctx_);
			ctx_ = std::exchange(o.ctx_, nullptr);
		}
		return *this;
	}
	Context(const Context &) = delete;
	Context &operator=(const Context &) = delete;
	~Context() { mrsync_ctx_destroy(&ctx_); }

	/** See mrsync_get(). Never throws: mrsync_get() does not, and a failure
	 *  whose message cannot be copied keeps its errno (detail::last_error). */
	Result<Registration> get(const void *addr, std::size_t len,
				 std::uint32_t access = MRSYNC_ACCESS_ALL) noexcept
	{
		mrsync_reg reg;
		if (int rc = mrsync_get(ctx_, addr, len, access, &reg); rc < 0)
			return detail::last_error(rc);
		return Registration(ctx_, reg);
	}

	/** See mrsync_hint(). */
	Status hint(const void *addr, std::size_t len, std::uint32_t access = MRSYNC_ACCESS_ALL)
	{
		return check(mrsync_hint(ctx_, addr, len, access));
	}
	/** See mrsync_notify_unmap(). */
	Status notify_unmap(const void *addr, std::size_t len)
	{
		return check(mrsync_notify_unmap(ctx_, addr, len));
	}
	/** See mrsync_resync(). */
	Status resync() { return check(mrsync_resync(ctx_)); }
	/** See mrsync_compact(). */
	Result<int> compact()
	{
		int rc = mrsync_compact(ctx_);
		if (rc < 0)
			return detail::last_error(rc);
		return rc;
	}
	/** See mrsync_get_stats(). */
	mrsync_stats stats() const noexcept
	{
		mrsync_stats s{};
		mrsync_get_stats(ctx_, &s, sizeof s);
		return s;
	}
	/** See driver_of(). */
	Driver &driver() const { return driver_of(ctx_); }
	mrsync_ctx *c_handle() const noexcept { return ctx_; }

private:
	explicit Context(mrsync_ctx *ctx) noexcept : ctx_(ctx) {}
	static Status check(int rc)
	{
		if (rc < 0)
			return detail::last_error(rc);
		return {};
	}
	mrsync_ctx *ctx_ = nullptr;
};

} // namespace mrsync
#pragma GCC visibility pop

#endif
