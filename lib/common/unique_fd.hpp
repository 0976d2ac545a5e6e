/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to the library and its drivers (lib/common): a move-only owner of
 * a file descriptor (the userfaultfd, the monitor's eventfd, the module's
 * /dev/mrsync file, /proc/self/maps, the uring driver's memfd).
 */
#ifndef MRSYNC_COMMON_UNIQUE_FD_HPP
#define MRSYNC_COMMON_UNIQUE_FD_HPP

#include <unistd.h>

#include <utility>

namespace mrsync::detail {

class UniqueFd {
public:
	UniqueFd() noexcept = default;
	/** Takes ownership of `fd` (-1: owns nothing). */
	explicit UniqueFd(int fd) noexcept : fd_(fd) {}
	UniqueFd(UniqueFd &&other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
	UniqueFd &operator=(UniqueFd &&other) noexcept
	{
		if (this != &other)
			reset(std::exchange(other.fd_, -1));
		return *this;
	}
	UniqueFd(const UniqueFd &) = delete;
	UniqueFd &operator=(const UniqueFd &) = delete;
	~UniqueFd() { reset(); }

	/** @return the descriptor, or -1. Thread safety: as the owner. */
	int get() const noexcept { return fd_; }
	explicit operator bool() const noexcept { return fd_ >= 0; }

	/** Gives up ownership. @return the descriptor, or -1.
	 *  Thread safety: the owner's thread. */
	int release() noexcept { return std::exchange(fd_, -1); }

	/** Closes the descriptor owned so far and owns `fd` instead.
	 *  Thread safety: the owner's thread. */
	void reset(int fd = -1) noexcept
	{
		if (fd_ >= 0)
			::close(fd_);
		fd_ = fd;
	}

private:
	int fd_ = -1;
};

} // namespace mrsync::detail

#endif
