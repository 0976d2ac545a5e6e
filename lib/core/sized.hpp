/* SPDX-License-Identifier: MIT */
/* The struct_size rule of the C ABI (mrsync.h, "Structs and their sizes"):
 * a caller built against an older header passes a smaller struct, one built
 * against a newer header a larger one. Private to libmrsync and
 * libmrsync_dpdk. */
#ifndef MRSYNC_SIZED_HPP
#define MRSYNC_SIZED_HPP

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

namespace mrsync::detail {

/* Copies an input struct of `size` bytes into `out`: the fields an older
 * caller did not have are zero, which means "default" for every field.
 * @return nullptr, or why `size` is refused (the caller names the argument):
 *         below `min_size` (the oldest layout ever released), or larger than
 *         T with non-zero bytes past it (fields this library does not know). */
template <class T>
const char *copy_in(const void *given, std::size_t size, std::size_t min_size, T &out) noexcept
{
	static_assert(std::is_trivially_copyable_v<T>);
	if (size < min_size)
		return "smaller than the oldest layout of this struct";
	out = T{};
	std::memcpy(&out, given, std::min(size, sizeof(T)));
	const auto *bytes = static_cast<const unsigned char *>(given);
	if (std::any_of(bytes + std::min(size, sizeof(T)), bytes + size,
			[](unsigned char b) { return b != 0; }))
		return "larger than this library knows, with fields set that it does not have "
		       "(built against a newer header)";
	return nullptr;
}

/* Copies an output struct into the caller's `size` bytes: an older caller
 * gets the fields it knows and nothing past them is written; a newer one
 * gets zeros in the fields this library does not have. */
template <class T>
void copy_out(const T &value, void *out, std::size_t size) noexcept
{
	static_assert(std::is_trivially_copyable_v<T>);
	std::memcpy(out, &value, std::min(size, sizeof(T)));
	if (size > sizeof(T))
		std::memset(static_cast<unsigned char *>(out) + sizeof(T), 0, size - sizeof(T));
}

} // namespace mrsync::detail

#endif
