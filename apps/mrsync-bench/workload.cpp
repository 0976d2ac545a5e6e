/* SPDX-License-Identifier: MIT */
#include "workload.hpp"

#include <sys/mman.h>

#include <bit>
#include <cerrno>
#include <random>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace mrsync::bench {

Mapping::Mapping(std::size_t bytes, bool populate) : size_(bytes)
{
	void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : MAP_NORESERVE), -1,
		       0);
	if (p == MAP_FAILED)
		throw std::system_error(errno, std::generic_category(), "mmap");
	data_ = static_cast<char *>(p);
}

Mapping::Mapping(Mapping &&o) noexcept
	: data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0))
{
}

Mapping &Mapping::operator=(Mapping &&o) noexcept
{
	if (this != &o) {
		if (data_)
			munmap(data_, size_);
		data_ = std::exchange(o.data_, nullptr);
		size_ = std::exchange(o.size_, 0);
	}
	return *this;
}

Mapping::~Mapping()
{
	if (data_)
		munmap(data_, size_);
}

Workload make_workload(std::uint32_t regions, std::uint64_t region_bytes,
		       std::uint32_t accesses, std::uint64_t max_len, int threads)
{
	if (!regions || !region_bytes || !std::has_single_bit(accesses) || !max_len ||
	    max_len > region_bytes)
		throw std::invalid_argument("workload: regions, region size, lookups (a power of "
					    "two) and lengths must be non-zero, lengths fit a region");
	Workload w;
	w.region_bytes = region_bytes;
	w.area = Mapping(std::size_t(regions) * region_bytes * 2, false);
	for (std::uint32_t i = 0; i < regions; ++i)
		w.regions.push_back(w.area.data() + std::uint64_t(i) * region_bytes * 2);
	w.mask = accesses - 1;
	std::mt19937_64 rng(0x6d7273796e63ull); /* fixed: every run times the same lookups */
	std::uniform_int_distribution<std::uint32_t> pick_region(0, regions - 1);
	std::uniform_int_distribution<std::uint64_t> pick_len(1, max_len);
	for (int t = 0; t < threads; ++t) {
		std::vector<bench_access> lookups(accesses);
		for (auto &a : lookups) {
			const std::uint64_t len = pick_len(rng);
			std::uniform_int_distribution<std::uint64_t> pick_off(0, region_bytes - len);
			a.addr = w.regions[pick_region(rng)] + pick_off(rng);
			a.len = len;
		}
		w.lookups.push_back(std::move(lookups));
	}
	return w;
}

} // namespace mrsync::bench
