/* SPDX-License-Identifier: MIT */
/**
 * @file
 * PRIVATE to lib/monitor: reference-counted coverage of address ranges.
 *
 * Watches may overlap (two registrations over the same pages), but a kernel
 * registration covers addresses, not watchers: the userfaultfd source asks
 * this table which parts nobody watches any more before it unregisters them.
 * Not thread-safe: its owner's lock guards it.
 */
#ifndef MRSYNC_MONITOR_COVERAGE_HPP
#define MRSYNC_MONITOR_COVERAGE_HPP

#include <cstdint>
#include <map>
#include <vector>

#include <mrsync/source.hpp>

namespace mrsync::detail {

class Coverage {
public:
	/** Counts one more watcher over `range` (non-empty).
	 *  May throw std::bad_alloc, leaving the table unchanged. */
	void add(Range range);

	/**
	 * Counts one watcher less over `range`, which must have been add()ed.
	 * @return the parts of `range` nobody covers any more, merged, in order.
	 * May throw std::bad_alloc, leaving the table unchanged.
	 */
	std::vector<Range> remove(Range range);

	/** @return the parts of `range` somebody covers, merged, in order. */
	std::vector<Range> covered(Range range) const;

	/** @return the parts of `range` nobody covers, in order. */
	std::vector<Range> uncovered(Range range) const;

	/** @return every covered range, merged, in order. */
	std::vector<Range> all() const { return covered({0, UINT64_MAX}); }

	/** @return true if nothing is covered. */
	bool empty() const noexcept { return counts_.empty(); }

	/** Forgets everything. */
	void clear() noexcept { counts_.clear(); }

private:
	/* Each key starts a segment that runs to the next key with the count
	 * stored there; the last key always holds 0, and neighbours differ. */
	using Counts = std::map<std::uint64_t, std::uint32_t>;

	std::uint32_t count_before(std::uint64_t at) const;
	void split_at(std::uint64_t at);
	void normalise(std::uint64_t from, std::uint64_t to) noexcept;

	Counts counts_;
};

} // namespace mrsync::detail

#endif
