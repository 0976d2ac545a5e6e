/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to the library and its drivers (lib/common): text for messages --
 * printf-style formatting into a std::string, and errno codes as words.
 */
#ifndef MRSYNC_COMMON_FORMAT_HPP
#define MRSYNC_COMMON_FORMAT_HPP

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

namespace mrsync::detail {

/** printf into a std::string of exactly the length needed (no truncation).
 *  Thread safety: any thread. */
__attribute__((format(printf, 1, 0))) inline std::string vfmt(const char *format, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	const int needed = std::vsnprintf(nullptr, 0, format, ap);
	std::string out(needed > 0 ? static_cast<std::size_t>(needed) : 0, '\0');
	if (needed > 0)
		std::vsnprintf(out.data(), out.size() + 1, format, again);
	va_end(again);
	return out;
}

/** printf into a std::string; see vfmt(). Thread safety: any thread. */
__attribute__((format(printf, 1, 2))) inline std::string fmt(const char *format, ...)
{
	va_list ap;
	va_start(ap, format);
	std::string out = vfmt(format, ap);
	va_end(ap);
	return out;
}

/** The text of an errno code, as strerror() but thread-safe (strerror_r;
 *  strerror may return a buffer another thread overwrites).
 *  Thread safety: any thread. */
inline std::string errno_text(int code)
{
	char buffer[128];
	/* The GNU strerror_r returns the text, in `buffer` or a static string;
	 * the XSI one returns 0 and fills `buffer`. */
	const auto text = strerror_r(code, buffer, sizeof buffer);
	if constexpr (std::is_same_v<decltype(text), const int>)
		return text == 0 ? std::string(buffer) : "errno " + std::to_string(code);
	else
		return text;
}

} // namespace mrsync::detail

#endif
