/* SPDX-License-Identifier: MIT */
/**
 * @file
 * Logging shared by mrsync's components: one tag per component, a level set
 * by the environment (MRSYNC_LOG=error|warning|info|debug, default warning;
 * an unknown value is reported once), lines prefixed with the component and
 * function, written to stderr or to the application's sink
 * (mrsync_set_log_sink() in mrsync.h; libmrsync_dpdk routes them to rte_log).
 * Nothing on the data path logs: the macros are for slow paths only.
 */
#ifndef MRSYNC_LOG_HPP
#define MRSYNC_LOG_HPP

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)

namespace mrsync {

/** The values of enum mrsync_log_level (mrsync.h), which sinks receive. */
enum class LogLevel { error = 0, warning = 1, info = 2, debug = 3 };

/** Whether a message of `level` would be printed. Thread-safe. */
bool log_enabled(LogLevel level) noexcept;

/** Formats one line (no length limit) and hands it to the sink, or prints
 *  it to stderr. Thread-safe; callable with any mrsync lock held. */
void log_line(LogLevel level, const char *component, const char *func, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

} // namespace mrsync
#pragma GCC visibility pop

#define MRSYNC_LOG(level, component, ...)                                                 \
	do {                                                                              \
		if (::mrsync::log_enabled(::mrsync::LogLevel::level))                     \
			::mrsync::log_line(::mrsync::LogLevel::level, component, __func__,  \
					   __VA_ARGS__);                                  \
	} while (0)

#endif
