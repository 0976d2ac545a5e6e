// The fuzz target's memory and the model of it: 64 pages inside a PROT_NONE
// reservation taken once per process, so no other mapping of the process (a
// malloc arena, a thread stack, the io_uring rings) can ever land there. Each
// page is either read-write anonymous memory or a PROT_NONE guard ("unmapped":
// a real munmap is followed at once by a guard), and the model keeps a shadow
// copy of what the CPU must read on every read-write page.
//
// Every change here is a real system call on the real address space; the
// caller tells mrsync about it afterwards (mrsync_notify_unmap), as a correct
// application with the manual source must.
#ifndef MRSYNC_FUZZ_ARENA_HPP
#define MRSYNC_FUZZ_ARENA_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace mrsync::fuzz {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kArenaPages = 64;
/** Beyond the arena, still inside the reservation: where away_and_back()
 *  parks pages for an instant. Never part of a lookup. */
inline constexpr std::size_t kScratchPages = 16;

class Arena {
public:
	/** The process's arena, reserved at the first call. Aborts if the
	 *  reservation fails (nothing can be checked without it). */
	static Arena &instance();

	/** Fresh zeroed read-write pages over the whole arena; shadow zero. */
	void reset();

	std::uint64_t addr(std::size_t page) const { return base_ + page * kPage; }
	std::uint64_t begin() const { return base_; }
	std::uint64_t end() const { return base_ + kArenaPages * kPage; }

	/** Whether every page [first, first + count) is read-write in the model. */
	bool rw(std::size_t first, std::size_t count) const;
	/** Whether every page overlapping [va, va + len) is read-write. */
	bool rw_bytes(std::uint64_t va, std::uint64_t len) const;
	/** How many pages overlapping [va, va + len) are guards. */
	std::size_t guard_pages(std::uint64_t va, std::uint64_t len) const;

	/* The changes; each clamps the page run to the arena. */
	/** mmap(MAP_FIXED) fresh zeroed read-write memory. */
	void map_fresh(std::size_t first, std::size_t count);
	/** munmap, then a PROT_NONE guard in the hole. */
	void unmap(std::size_t first, std::size_t count);
	/** mremap(MREMAP_FIXED) the run to `to` (must not overlap): the pages,
	 *  guards included, move with their contents; the source becomes guards. */
	void move(std::size_t first, std::size_t count, std::size_t to);
	/** mremap the run into the scratch area and straight back: the same
	 *  physical pages return to the same addresses. */
	void away_and_back(std::size_t first, std::size_t count);
	/** madvise(MADV_DONTNEED): read-write pages read zero afterwards. */
	void drop(std::size_t first, std::size_t count);
	/** The CPU writes `bytes` at va (read-write pages only). */
	void cpu_write(std::uint64_t va, std::span<const std::uint8_t> bytes);

	/** A DMA write the model says landed: the shadow takes the bytes. */
	void record(std::uint64_t va, std::span<const std::uint8_t> bytes);
	/** What the CPU must read at va (read-write pages only). */
	const std::uint8_t *shadow(std::uint64_t va) const;
	/** The first address of a read-write page whose memory differs from the
	 *  shadow, if any. */
	std::optional<std::uint64_t> first_difference() const;

private:
	Arena();
	void guard(std::uint64_t va, std::size_t len) const;
	void move_pages(std::uint64_t from, std::uint64_t to, std::size_t count) const;

	std::uint64_t base_ = 0;
	std::array<bool, kArenaPages> rw_{};
	std::array<std::uint8_t, kArenaPages * kPage> shadow_{};
};

/** Reports a failure of the harness itself (a system call on our own
 *  reservation failed) and aborts. */
[[noreturn]] void harness_failure(const char *what);

} // namespace mrsync::fuzz

#endif
