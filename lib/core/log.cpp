/* SPDX-License-Identifier: MIT */
#include <mrsync/log.hpp>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mrsync {

namespace {
LogLevel level_from_env() noexcept
{
	const char *v = std::getenv("MRSYNC_LOG");
	if (!v)
		return LogLevel::warning;
	static const char *const names[] = {"error", "warning", "info", "debug"};
	for (int i = 0; i < 4; ++i)
		if (!std::strcmp(v, names[i]))
			return static_cast<LogLevel>(i);
	return LogLevel::warning;
}
} // namespace

bool log_enabled(LogLevel level) noexcept
{
	static const LogLevel threshold = level_from_env();
	return level <= threshold;
}

void log_line(LogLevel level, const char *component, const char *func, const char *fmt, ...)
{
	static const char *const tags[] = {"ERR", "WARN", "INFO", "DEBUG"};
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	std::vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* one fprintf: lines from different threads do not interleave */
	std::fprintf(stderr, "mrsync %s %s: %s: %s\n", tags[static_cast<int>(level)], component,
		     func, line);
}

} // namespace mrsync
