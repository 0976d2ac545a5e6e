/* SPDX-License-Identifier: MIT */
/* Private. A set of addresses kept as disjoint, merged half-open ranges --
 * the context's record of changes that may still be in progress (see
 * Context::unsettled_). Not thread-safe: its owner's lock guards it. */
#ifndef MRSYNC_RANGE_SET_HPP
#define MRSYNC_RANGE_SET_HPP

#include <cstdint>
#include <map>
#include <vector>

#include <mrsync/source.hpp>

namespace mrsync::detail {

class RangeSet {
public:
	/** Adds [r.start, r.end) (empty ranges are ignored). */
	void add(Range r);
	/** Removes [r.start, r.end). */
	void remove(Range r);
	/** The parts of `r` in the set, in order. */
	std::vector<Range> intersect(Range r) const;
	bool empty() const noexcept { return ranges_.empty(); }
	void clear() noexcept { ranges_.clear(); }

private:
	std::map<std::uint64_t, std::uint64_t> ranges_; /* start -> end, disjoint, merged */
};

/** `from` minus `cut`, both sorted and merged; the result is too. */
std::vector<Range> subtract(const std::vector<Range> &from, const std::vector<Range> &cut);

} // namespace mrsync::detail

#endif
