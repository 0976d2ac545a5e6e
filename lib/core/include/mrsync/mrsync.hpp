/* SPDX-License-Identifier: MIT */
/**
 * @file
 * mrsync C++ API: RAII over the C ABI of mrsync.h. A Context owns the cache;
 * a Registration owns one hold and releases it when destroyed.
 */
#ifndef MRSYNC_HPP
#define MRSYNC_HPP

#include <cstdint>
#include <utility>

#include <mrsync/driver.hpp>
#include <mrsync/mrsync.h>
#include <mrsync/result.hpp>

namespace mrsync {

/** The C context's driver (for driver-specific calls such as the uring
 *  HCA's DMA API). Thread-safe; valid while the context lives. */
Driver &driver_of(mrsync_ctx *ctx);

namespace detail {
/* noexcept: Context::get() is. Without memory for the message, the code
 * alone (an empty string allocates nothing). */
inline Error last_error(int rc) noexcept
{
	try {
		return Error{-rc, mrsync_last_error()};
	} catch (...) {
		return Error{-rc, {}};
	}
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
	static Result<Context> create(const mrsync_params &params = MRSYNC_PARAMS_INIT)
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

	/** See mrsync_get(). */
	Result<Registration> get(const void *addr, std::size_t len,
				 std::uint32_t access = MRSYNC_ACCESS_ALL) noexcept
	{
		mrsync_reg reg;
		if (int rc = mrsync_get(ctx_, addr, len, access, &reg); rc < 0) [[unlikely]]
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
	mrsync_stats stats() const
	{
		mrsync_stats s{};
		mrsync_get_stats(ctx_, &s);
		return s;
	}
	Driver &driver() const { return driver_of(ctx_); }
	mrsync_ctx *c_handle() const noexcept { return ctx_; }

private:
	explicit Context(mrsync_ctx *ctx) : ctx_(ctx) {}
	static Status check(int rc)
	{
		if (rc < 0)
			return detail::last_error(rc);
		return {};
	}
	mrsync_ctx *ctx_ = nullptr;
};

} // namespace mrsync

#endif
