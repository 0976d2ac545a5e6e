/* SPDX-License-Identifier: MIT */
#include "mapped_ranges.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace mrsync::detail {

std::vector<Range> mapped_writable(std::uint64_t start, std::uint64_t end)
{
	std::vector<Range> parts;
	std::FILE *maps = std::fopen("/proc/self/maps", "re");
	if (!maps)
		return parts;
	char line[512];
	while (std::fgets(line, sizeof(line), maps)) {
		std::uint64_t lo, hi;
		char perms[5] = {};
		if (std::sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &lo, &hi, perms) != 3)
			continue;
		if (hi <= start)
			continue;
		if (lo >= end)
			break; /* the file is sorted by address */
		if (perms[0] != 'r' || perms[1] != 'w')
			continue;
		const Range part{std::max(lo, start), std::min(hi, end)};
		if (!parts.empty() && parts.back().end == part.start)
			parts.back().end = part.end;
		else
			parts.push_back(part);
	}
	std::fclose(maps);
	return parts;
}

} // namespace mrsync::detail
