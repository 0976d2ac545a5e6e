/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the command-line tools: "--name=value" / "--name value"
 * parsing and the event-source names users type. */
#ifndef MRSYNC_APPS_CLI_HPP
#define MRSYNC_APPS_CLI_HPP

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include <mrsync/mrsync.h>

namespace mrsync::cli {

/** If argv[i] is `--name=V` or `--name V`, returns V (advancing i). */
inline std::optional<std::string> option(int argc, char **argv, int &i, std::string_view name)
{
	const std::string_view arg = argv[i];
	if (arg.size() > name.size() && arg.substr(0, name.size()) == name && arg[name.size()] == '=')
		return std::string(arg.substr(name.size() + 1));
	if (arg == name && i + 1 < argc)
		return std::string(argv[++i]);
	return std::nullopt;
}

/** "auto" (0), "kmod", "uffd", "manual" -> MRSYNC_SOURCE_* mask; nullopt if unknown. */
inline std::optional<std::uint32_t> source_mask(std::string_view name)
{
	if (name == "auto")
		return 0u;
	if (name == "kmod")
		return std::uint32_t(MRSYNC_SOURCE_KMOD);
	if (name == "uffd")
		return std::uint32_t(MRSYNC_SOURCE_UFFD);
	return std::nullopt;
}

/** Parses a count such as "1000000" or "1e6"; nullopt if it is not one. */
inline std::optional<std::uint64_t> count(const std::string &text)
{
	char *end = nullptr;
	const double v = std::strtod(text.c_str(), &end);
	if (!end || *end || v < 0)
		return std::nullopt;
	return static_cast<std::uint64_t>(v);
}

} // namespace mrsync::cli

#endif
