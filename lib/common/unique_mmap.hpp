/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to the library and its drivers (lib/common): a move-only owner of
 * a memory mapping (the module's ring, the uring driver's staging area).
 */
#ifndef MRSYNC_COMMON_UNIQUE_MMAP_HPP
#define MRSYNC_COMMON_UNIQUE_MMAP_HPP

#include <sys/mman.h>

#include <cstddef>
#include <utility>

namespace mrsync::detail {

class UniqueMmap {
public:
	UniqueMmap() noexcept = default;
	/** Takes ownership of [addr, addr + len) as mmap() returned it
	 *  (nullptr or MAP_FAILED: owns nothing). */
	UniqueMmap(void *addr, std::size_t len) noexcept
		: addr_(addr == MAP_FAILED ? nullptr : addr), len_(addr_ ? len : 0)
	{
	}
	UniqueMmap(UniqueMmap &&other) noexcept
		: addr_(std::exchange(other.addr_, nullptr)), len_(std::exchange(other.len_, 0))
	{
	}
	UniqueMmap &operator=(UniqueMmap &&other) noexcept
	{
		if (this != &other) {
			reset();
			addr_ = std::exchange(other.addr_, nullptr);
			len_ = std::exchange(other.len_, 0);
		}
		return *this;
	}
	UniqueMmap(const UniqueMmap &) = delete;
	UniqueMmap &operator=(const UniqueMmap &) = delete;
	~UniqueMmap() { reset(); }

	/** @return the start, or nullptr. Thread safety: as the owner. */
	void *get() const noexcept { return addr_; }
	std::byte *data() const noexcept { return static_cast<std::byte *>(addr_); }
	std::size_t size() const noexcept { return len_; }
	explicit operator bool() const noexcept { return addr_ != nullptr; }

	/** Unmaps what it owns. Thread safety: the owner's thread. */
	void reset() noexcept
	{
		if (addr_)
			::munmap(std::exchange(addr_, nullptr), std::exchange(len_, 0));
	}

private:
	void *addr_ = nullptr;
	std::size_t len_ = 0;
};

} // namespace mrsync::detail

#endif
