/* SPDX-License-Identifier: MIT */
/**
 * @file
 * Result<T>: a value or an Error, the return type of every fallible C++ call in
 * mrsync (C++20 has no std::expected). The C ABI turns an Error into "-errno"
 * and keeps its message as the thread's last error text.
 */
#ifndef MRSYNC_RESULT_HPP
#define MRSYNC_RESULT_HPP

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace mrsync {

/** A failure: a positive errno code and a message that names the argument. */
struct Error {
	int code = EINVAL;
	std::string message;
};

/** Builds an Error; `code` is a positive errno value. */
inline Error make_error(int code, std::string message)
{
	return Error{code, std::move(message)};
}

template <class T>
class [[nodiscard]] Result {
public:
	Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
	Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

	bool ok() const noexcept { return v_.index() == 0; }
	explicit operator bool() const noexcept { return ok(); }

	T &value() & { return std::get<0>(v_); }
	const T &value() const & { return std::get<0>(v_); }
	T &&value() && { return std::get<0>(std::move(v_)); }
	T *operator->() { return &value(); }
	const T *operator->() const { return &value(); }
	T &operator*() & { return value(); }

	const Error &error() const & { return std::get<1>(v_); }
	Error &&error() && { return std::get<1>(std::move(v_)); }

private:
	std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
	Result() = default;
	Result(Error error) : error_(std::move(error)), failed_(true) {}

	bool ok() const noexcept { return !failed_; }
	explicit operator bool() const noexcept { return ok(); }
	const Error &error() const & { return error_; }
	Error &&error() && { return std::move(error_); }

private:
	Error error_{};
	bool failed_ = false;
};

using Status = Result<void>;

} // namespace mrsync

#endif
