#include "arena.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mrsync::fuzz {

namespace {

/* Entries of up to 64 KiB never reach past the arena. */
constexpr std::size_t kAlign = 64 * 1024;

void *at(std::uint64_t va) { return reinterpret_cast<void *>(va); }

} // namespace

void harness_failure(const char *what)
{
	std::fprintf(stderr, "mrsync-fuzz: harness failure: %s: %s\n", what, std::strerror(errno));
	std::abort();
}

Arena &Arena::instance()
{
	static Arena arena;
	return arena;
}

Arena::Arena()
{
	const std::size_t len = (kArenaPages + kScratchPages) * kPage + kAlign;
	void *p = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		harness_failure("reserving the arena");
	/* The slack around the aligned arena stays reserved for good. */
	base_ = (reinterpret_cast<std::uint64_t>(p) + kAlign - 1) & ~std::uint64_t(kAlign - 1);
}

void Arena::reset()
{
	map_fresh(0, kArenaPages);
}

bool Arena::rw(std::size_t first, std::size_t count) const
{
	return first + count <= kArenaPages &&
	       std::all_of(rw_.begin() + first, rw_.begin() + first + count, [](bool b) { return b; });
}

bool Arena::rw_bytes(std::uint64_t va, std::uint64_t len) const
{
	if (va < begin() || len == 0 || va + len > end())
		return false;
	const std::size_t first = (va - base_) / kPage, last = (va + len - 1 - base_) / kPage;
	return rw(first, last - first + 1);
}

std::size_t Arena::guard_pages(std::uint64_t va, std::uint64_t len) const
{
	const std::uint64_t from = std::max(va, begin()), to = std::min(va + len, end());
	std::size_t n = 0;
	for (std::uint64_t p = from & ~std::uint64_t(kPage - 1); p < to; p += kPage)
		n += !rw_[(p - base_) / kPage];
	return n;
}

void Arena::guard(std::uint64_t va, std::size_t len) const
{
	if (mmap(at(va), len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
		 0) == MAP_FAILED)
		harness_failure("mmap of a PROT_NONE guard");
}

void Arena::map_fresh(std::size_t first, std::size_t count)
{
	count = std::min(count, kArenaPages - first);
	if (mmap(at(addr(first)), count * kPage, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		harness_failure("mmap(MAP_FIXED)");
	std::fill_n(rw_.begin() + first, count, true);
	std::memset(shadow_.data() + first * kPage, 0, count * kPage);
}

void Arena::unmap(std::size_t first, std::size_t count)
{
	count = std::min(count, kArenaPages - first);
	if (munmap(at(addr(first)), count * kPage) != 0)
		harness_failure("munmap");
	guard(addr(first), count * kPage);
	std::fill_n(rw_.begin() + first, count, false);
	std::memset(shadow_.data() + first * kPage, 0, count * kPage);
}

/* One mremap when the run is one mapping (or the kernel moves several at
 * once), else page by page: each page lies inside one mapping. Either way
 * the run's source is a hole afterwards. */
void Arena::move_pages(std::uint64_t from, std::uint64_t to, std::size_t count) const
{
	const int flags = MREMAP_MAYMOVE | MREMAP_FIXED;
	if (mremap(at(from), count * kPage, count * kPage, flags, at(to)) != MAP_FAILED)
		return;
	for (std::size_t i = 0; i < count; ++i)
		if (mremap(at(from + i * kPage), kPage, kPage, flags, at(to + i * kPage)) == MAP_FAILED)
			harness_failure("mremap of one page");
}

void Arena::move(std::size_t first, std::size_t count, std::size_t to)
{
	count = std::min({count, kArenaPages - first, kArenaPages - to});
	if (first < to + count && to < first + count)
		return; /* overlapping: the caller should not have asked */
	move_pages(addr(first), addr(to), count);
	guard(addr(first), count * kPage);
	std::copy_n(rw_.begin() + first, count, rw_.begin() + to);
	std::copy_n(shadow_.begin() + first * kPage, count * kPage, shadow_.begin() + to * kPage);
	std::fill_n(rw_.begin() + first, count, false);
	std::memset(shadow_.data() + first * kPage, 0, count * kPage);
}

void Arena::away_and_back(std::size_t first, std::size_t count)
{
	count = std::min({count, kArenaPages - first, kScratchPages});
	const std::uint64_t scratch = end();
	move_pages(addr(first), scratch, count);
	move_pages(scratch, addr(first), count);
	guard(scratch, count * kPage);
}

void Arena::drop(std::size_t first, std::size_t count)
{
	count = std::min(count, kArenaPages - first);
	if (madvise(at(addr(first)), count * kPage, MADV_DONTNEED) != 0)
		harness_failure("madvise(MADV_DONTNEED)");
	std::memset(shadow_.data() + first * kPage, 0, count * kPage);
}

void Arena::cpu_write(std::uint64_t va, std::span<const std::uint8_t> bytes)
{
	if (!rw_bytes(va, bytes.size()))
		return;
	std::memcpy(at(va), bytes.data(), bytes.size());
	record(va, bytes);
}

void Arena::record(std::uint64_t va, std::span<const std::uint8_t> bytes)
{
	std::copy(bytes.begin(), bytes.end(), shadow_.begin() + (va - base_));
}

const std::uint8_t *Arena::shadow(std::uint64_t va) const
{
	return shadow_.data() + (va - base_);
}

std::optional<std::uint64_t> Arena::first_difference() const
{
	for (std::size_t p = 0; p < kArenaPages; ++p)
		if (rw_[p] && std::memcmp(at(addr(p)), shadow_.data() + p * kPage, kPage) != 0)
			return addr(p);
	return std::nullopt;
}

} // namespace mrsync::fuzz
