/* SPDX-License-Identifier: MIT */
/* The event-source names users type (--source), for the tools built on
 * libmrsync. */
#ifndef MRSYNC_APPS_CLI_SOURCE_HPP
#define MRSYNC_APPS_CLI_SOURCE_HPP

#include <mrsync/mrsync.h>

#include "cli.hpp"

namespace mrsync::cli {

/** "auto" (0), "kmod", "uffd", "manual" -> MRSYNC_SOURCE_* mask; nullopt if unknown. */
inline std::optional<std::uint32_t> source_mask(std::string_view name)
{
	if (name == "auto")
		return 0u;
	if (name == "kmod")
		return std::uint32_t(MRSYNC_SOURCE_KMOD);
	if (name == "uffd")
		return std::uint32_t(MRSYNC_SOURCE_UFFD);
	if (name == "manual")
		return std::uint32_t(MRSYNC_SOURCE_MANUAL);
	return std::nullopt;
}

/** --source: one of `accepted` (a '|'-separated list of source_mask() names). */
inline Option source(const char *help, const char *accepted, std::uint32_t &out)
{
	return {"source", "S", help, [&out, accepted](const char *v) -> std::optional<std::string> {
			const std::string list = std::string("|") + accepted + "|";
			const auto mask = source_mask(v);
			if (!*v || !mask || list.find("|" + std::string(v) + "|") == std::string::npos)
				return std::string("one of ") + accepted;
			out = *mask;
			return std::nullopt;
		}};
}

} // namespace mrsync::cli

#endif
