/* SPDX-License-Identifier: MIT */
/* Private. printf-style formatting into std::string, for error messages. */
#ifndef MRSYNC_FORMAT_HPP
#define MRSYNC_FORMAT_HPP

#include <cstdarg>
#include <cstdio>
#include <string>

namespace mrsync::detail {

__attribute__((format(printf, 1, 2))) inline std::string fmt(const char *format, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, format);
	std::vsnprintf(buf, sizeof(buf), format, ap);
	va_end(ap);
	return buf;
}

} // namespace mrsync::detail

#endif
