/* SPDX-License-Identifier: MIT */
/* Private. Which parts of a range are mapped writable right now, from
 * /proc/self/maps. Used only when a resync must re-pin a range that may have
 * holes: one read of the maps beats probing the holes pin by pin. */
#ifndef MRSYNC_MAPPED_RANGES_HPP
#define MRSYNC_MAPPED_RANGES_HPP

#include <cstdint>
#include <vector>

#include <mrsync/source.hpp>

namespace mrsync::detail {

/** The writable mapped parts of [start, end), sorted and merged; empty on
 *  error (then everything is treated as a hole, which is the safe side). */
std::vector<Range> mapped_writable(std::uint64_t start, std::uint64_t end);

} // namespace mrsync::detail

#endif
