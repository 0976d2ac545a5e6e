/* SPDX-License-Identifier: MIT */
/* The log: a level from MRSYNC_LOG, lines to stderr or to the sink the
 * application installed (mrsync_set_log_sink; libmrsync_dpdk installs
 * rte_log's at attach). */
#include <mrsync/log.hpp>
#include <mrsync/mrsync.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <shared_mutex>

namespace mrsync {

namespace {

constexpr const char *kLevelNames[] = {"error", "warning", "info", "debug"};

/* The sink and its argument. Lines hold the lock shared while they call the
 * sink, so that when mrsync_set_log_sink() returns (exclusive) no call to
 * the sink it replaced is still running: the caller may free its arg. */
std::shared_mutex sink_mu;
mrsync_log_fn sink_fn = nullptr;
void *sink_arg = nullptr;

void emit(LogLevel level, const char *component, const char *message)
{
	static const char *const tags[] = {"ERR", "WARN", "INFO", "DEBUG"};
	std::shared_lock lock(sink_mu);
	if (sink_fn) {
		sink_fn(static_cast<int>(level), component, message, sink_arg);
		return;
	}
	/* one fprintf: lines from different threads do not interleave */
	std::fprintf(stderr, "mrsync %s %s: %s\n", tags[static_cast<int>(level)], component,
		     message);
}

/* MRSYNC_LOG, read once. An unknown value is said once, here (the default
 * level is warning, so the line always passes), rather than ignored. */
LogLevel read_threshold() noexcept
{
	const char *v = std::getenv("MRSYNC_LOG");
	if (!v)
		return LogLevel::warning;
	for (int i = 0; i < 4; ++i)
		if (!std::strcmp(v, kLevelNames[i]))
			return static_cast<LogLevel>(i);
	char line[256];
	std::snprintf(line, sizeof(line),
		      "%s: MRSYNC_LOG=%.64s is not a level: accepted are error, warning, info, "
		      "debug; using warning",
		      __func__, v);
	emit(LogLevel::warning, "log", line);
	return LogLevel::warning;
}

LogLevel threshold() noexcept
{
	static const LogLevel level = read_threshold();
	return level;
}

} // namespace

bool log_enabled(LogLevel level) noexcept
{
	return level <= threshold();
}

void log_line(LogLevel level, const char *component, const char *func, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *text = nullptr;
	const int n = vasprintf(&text, fmt, ap); /* no length limit: paths can be long */
	va_end(ap);
	if (n < 0)
		return;
	const std::size_t len = std::strlen(func) + 2 + std::size_t(n) + 1;
	if (char *line = static_cast<char *>(std::malloc(len))) {
		std::snprintf(line, len, "%s: %s", func, text);
		emit(level, component, line);
		std::free(line);
	}
	std::free(text);
}

} // namespace mrsync

extern "C" int mrsync_set_log_sink(mrsync_log_fn fn, void *arg)
{
	{
		std::unique_lock lock(mrsync::sink_mu);
		mrsync::sink_fn = fn;
		mrsync::sink_arg = fn ? arg : nullptr;
	}
	/* read MRSYNC_LOG now: a bad value is reported to the new sink */
	(void)mrsync::threshold();
	return 0;
}

extern "C" void mrsync_get_log_sink(mrsync_log_fn *fn, void **arg)
{
	std::shared_lock lock(mrsync::sink_mu);
	if (fn)
		*fn = mrsync::sink_fn;
	if (arg)
		*arg = mrsync::sink_arg;
}
