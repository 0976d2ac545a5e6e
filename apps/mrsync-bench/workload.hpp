/* SPDX-License-Identifier: MIT */
/* mrsync-bench workload: `regions` registered areas of `region_bytes` each,
 * with an unused gap of the same size after each (so no cache can merge
 * neighbours), and per thread a precomputed array of random lookups: a random
 * region, a random length of 1 .. max_len bytes, a random offset at which that
 * length fits inside the region. */
#ifndef MRSYNC_BENCH_WORKLOAD_HPP
#define MRSYNC_BENCH_WORKLOAD_HPP

#include <cstddef>
#include <cstdint>
#include <vector>

#include "access.h"

namespace mrsync::bench {

/** An anonymous private mapping, unmapped on destruction. */
class Mapping {
public:
	Mapping() = default;
	/** Maps `bytes` read-write; `populate` faults every page in now.
	 *  Throws std::system_error on failure. */
	Mapping(std::size_t bytes, bool populate);
	Mapping(Mapping &&o) noexcept;
	Mapping &operator=(Mapping &&o) noexcept;
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;
	~Mapping();

	char *data() const noexcept { return data_; }
	std::size_t size() const noexcept { return size_; }

private:
	char *data_ = nullptr;
	std::size_t size_ = 0;
};

struct Workload {
	Mapping area;
	std::vector<char *> regions;
	std::uint64_t region_bytes = 0;
	/** One array per thread, each `accesses` long (a power of two). */
	std::vector<std::vector<bench_access>> lookups;
	std::uint64_t mask = 0;
};

Workload make_workload(std::uint32_t regions, std::uint64_t region_bytes,
		       std::uint32_t accesses, std::uint64_t max_len, int threads);

} // namespace mrsync::bench

#endif
