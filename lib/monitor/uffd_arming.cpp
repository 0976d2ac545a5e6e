/* SPDX-License-Identifier: MIT */
/* The userfaultfd source's watches (uffd_source.hpp, rule 4): registering
 * ranges with the kernel (UFFDIO_REGISTER), re-arming what a new mapping
 * replaced before a pin, and unregistering what nobody watches any more.
 * All of it under mu_, which the monitor never takes. */
#include <linux/userfaultfd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>

#include "address_space.hpp"
#include "format.hpp"
#include "uffd_source.hpp"

namespace mrsync::detail {

/* 0 or an errno; retries the transient failures. */
int uffd_register(int uffd, Range range) noexcept
{
	uffdio_register request{};
	request.range.start = range.start;
	request.range.len = range.end - range.start;
	request.mode = UFFDIO_REGISTER_MODE_WP; /* never write-protected: events only */
	for (;;) {
		if (::ioctl(uffd, UFFDIO_REGISTER, &request) == 0)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return errno;
	}
}

/* Asked without changing anything a pin would not change anyway:
 * UFFDIO_ZEROPAGE (UFFDIO_COPY of zeros for hugetlb) fails with ENOENT on a
 * mapping no userfaultfd watches, with EEXIST on a page already there, and
 * otherwise maps the zero page a first touch would map (it fills, it
 * invalidates nothing: no mmu notifier runs). */
int uffd_probe(int uffd, std::uint64_t va, std::uint64_t len, const void *zeros) noexcept
{
	for (;;) {
		int rc;
		if (zeros) {
			uffdio_copy copy{};
			copy.dst = va;
			copy.src = reinterpret_cast<std::uint64_t>(zeros);
			copy.len = len;
			copy.mode = UFFDIO_COPY_MODE_DONTWAKE;
			rc = ::ioctl(uffd, UFFDIO_COPY, &copy);
		} else {
			uffdio_zeropage zero{};
			zero.range = {va, len};
			zero.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
			rc = ::ioctl(uffd, UFFDIO_ZEROPAGE, &zero);
		}
		if (rc == 0 || errno == EEXIST)
			return 0;
		if (errno != EINTR)
			return errno;
	}
}

int uffd_unregister(int uffd, Range range) noexcept
{
	uffdio_range request{range.start, range.end - range.start};
	for (;;) {
		if (::ioctl(uffd, UFFDIO_UNREGISTER, &request) == 0)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return errno;
	}
}

/* Registers `range` (page-aligned); inside a hugetlb mapping the kernel
 * wants huge-page-aligned ranges, so on EINVAL retry rounded out to that
 * mapping's own page size -- and only then. Rounding out blindly would reach
 * mappings nobody asked us to watch, such as a thread's stack next to the
 * buffer: glibc madvise()s an exiting thread's stack, and if that thread is
 * our monitor it then waits for itself to read the event, forever (seen in
 * the integration suite). `registered` receives what was registered.
 * @return 0 or an errno. */
int UffdSource::register_aligned(Range range, Range &registered) noexcept
{
	int code = uffd_register(uffd_.get(), range);
	if (code == 0) {
		registered = range;
		return 0;
	}
	if (code != EINVAL)
		return code;
	const std::uint64_t size = kernel_page_size_at(range.start);
	if (size <= page_size())
		return code;
	/* hugetlb mappings are aligned to their page size, so the rounded
	 * range stays inside the mapping that holds range.start. */
	const auto aligned = align_out(range, size);
	if (!aligned || *aligned == range)
		return code;
	if (uffd_register(uffd_.get(), *aligned) == 0) {
		registered = *aligned;
		return 0;
	}
	return code;
}

Result<Range> UffdSource::pages_of(std::uint64_t va, std::uint64_t len, std::string_view what) const
{
	auto checked = checked_range(va, len, what);
	if (!checked)
		return std::move(checked).error();
	if (abandoned_)
		return make_error(ENODEV, std::string(what) +
						  ": the userfaultfd source was abandoned (fork child)");
	return *align_out(*checked, page_size()); /* checked: no wrap */
}

Result<std::uint64_t> UffdSource::watch(std::uint64_t va, std::uint64_t len)
{
	auto pages = pages_of(va, len, "watch");
	if (!pages)
		return std::move(pages).error();
	const Range range = *pages;

	std::lock_guard lock(mu_);
	/* The kernel registers around holes without complaint; a watch over
	 * memory that is not there is the caller's mistake. A kept proof
	 * (uffd_chunks.cpp) already says it is all mapped. */
	if (!proven_locked(range) && !fully_mapped(range))
		return uffd_explain_unmapped("watch", range).error();
	Watch w{range, chunk_for_locked(range)};
	if (!w.chunk.end) {
		if (const int code = register_aligned(range, w.range))
			return uffd_explain_refused("watch", range, code).error();
	}
	try {
		if (!w.chunk.end)
			coverage_.add(w.range);
		try {
			watches_.emplace(next_handle_, w);
		} catch (...) {
			if (w.chunk.end)
				release_chunk_locked(w.chunk);
			else
				for (const Range &piece : coverage_.remove(w.range))
					disarm(piece);
			throw;
		}
	} catch (const std::bad_alloc &) {
		/* Still registered where nobody asked: only spurious events. */
		return make_error(ENOMEM, "watch: out of memory for the watch table");
	}
	return next_handle_++;
}

void UffdSource::unwatch(std::uint64_t handle) noexcept
{
	if (abandoned_)
		return;
	std::lock_guard lock(mu_);
	const auto it = watches_.find(handle);
	if (it == watches_.end())
		return;
	if (it->second.chunk.end) {
		release_chunk_locked(it->second.chunk);
		watches_.erase(it);
		return;
	}
	try {
		/* Only what no other watch covers: overlapping watches share the
		 * kernel's registration. */
		for (const Range &piece : coverage_.remove(it->second.range))
			disarm(piece);
	} catch (...) {
		/* Left registered: only spurious events. */
	}
	watches_.erase(it);
}

/* Unregisters a piece nobody watches. Never more than the piece: a
 * neighbour's registration must stay (unregistering too much would lose
 * events; leaving too much registered only adds spurious ones). */
void UffdSource::disarm(Range piece) noexcept
{
	if (uffd_unregister(uffd_.get(), piece) != EINVAL)
		return;
	/* Nothing mapped there any more, or the piece now holds a mapping the
	 * kernel refuses (a file, another userfaultfd's): go mapping by
	 * mapping and skip those. */
	try {
		if (auto mappings = mappings_in(piece))
			for (const auto &mapping : *mappings)
				uffd_unregister(uffd_.get(), mapping.range);
	} catch (...) {
	}
}

Status UffdSource::prepare_pin(std::uint64_t handle, Range range)
{
	auto pages = pages_of(range.start, range.end - range.start, "pin");
	if (!pages)
		return std::move(pages).error();
	range = *pages;
	/* Arms even what it will not vouch for: another source may pin it on
	 * its own word, and the mapping's end must still be reported. */
	Range chunk;
	{
		std::lock_guard lock(mu_);
		const auto it = watches_.find(handle);
		if (it == watches_.end() || range.start < it->second.range.start ||
		    it->second.range.end < range.end)
			return make_error(ENOTSUP, "pin: " + format_range(range) +
							   " is not watched by this userfaultfd source");
		chunk = it->second.chunk;
		if (chunk.end && !unguarded_ && proven_locked(range))
			return {};
	}
	/* A whole chunk proven once serves the next pins in it; if part of it
	 * is gone or not private anonymous any more, prove just the range. */
	if (chunk.end && !unguarded_ && prove_chunk(chunk, range))
		return {};
	/* Arm, look, then prove that what we looked at is armed. Looking after
	 * arming is not enough by itself: an armed SysV segment can go without
	 * an event (shmdt) and an anonymous mapping fill the hole without one,
	 * all between the REGISTER and the look -- the pin would then take a
	 * page nobody watches, stale after its first change. A mapping armed
	 * and private-anonymous once both are established can only go with an
	 * event (munmap, mremap, mmap(MAP_FIXED)), which the retry half sees. */
	const auto patience = std::chrono::steady_clock::now() + std::chrono::seconds(5);
	for (unsigned unarmed = 0;;) {
		{
			std::lock_guard lock(mu_);
			for (const Range &piece : coverage_.covered(range))
				if (Status armed = arm(piece); !armed)
					return armed;
		}
		if (unguarded_)
			return {};
		auto mappings = uffd_check_sees_all("pin", range);
		if (!mappings)
			return std::move(mappings).error();
		const int code = probe_armed(*mappings, range);
		if (code == 0)
			return {};
		/* An event is being delivered: the monitor reads it without any
		 * lock of ours, however loaded the machine; then look again. */
		if (code == EAGAIN && std::chrono::steady_clock::now() < patience) {
			sched_yield();
			continue;
		}
		if (code == ENOENT && ++unarmed < 8)
			continue; /* replaced while we armed it: arm what is there now */
		return make_error(code == ENOENT ? EAGAIN : code,
				  "pin: " + format_range(range) + " keeps being replaced by "
				  "mappings userfaultfd does not watch yet (" + errno_text(code) +
				  "); try again");
	}
}

/* 0 if every mapping of `mappings` inside `range` is registered with this
 * userfaultfd now, else the errno of the first that is not (ENOENT). */
int UffdSource::probe_armed(std::span<const Mapping> mappings, Range range)
{
	for (const auto &m : mappings) {
		const std::uint64_t va = std::max(m.range.start, range.start);
		const std::uint64_t size = kernel_page_size_at(va);
		const void *zeros = nullptr;
		if (size > page_size()) {
			std::lock_guard lock(mu_);
			if (zeros_.size() < size) {
				zeros_ = UniqueMmap(mmap(nullptr, size, PROT_READ,
							 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), size);
				if (!zeros_)
					return errno;
			}
			zeros = zeros_.get();
		}
		if (const int code = uffd_probe(uffd_.get(), va & ~(size - 1), size, zeros))
			return code;
	}
	return 0;
}

/* Registers every mapped part of a watched piece; holes are skipped. */
Status UffdSource::arm(Range piece)
{
	Range registered;
	const int code = register_aligned(piece, registered);
	if (code == 0)
		return {};
	if (code != EINVAL && code != EBUSY)
		return uffd_explain_refused("pin", piece, code);

	/* EINVAL: nothing mapped, or some mapping refused; EBUSY: another
	 * userfaultfd holds some of it. Arm what can be armed, report the rest. */
	auto mappings = mappings_in(piece);
	if (!mappings)
		return uffd_explain_refused("pin", piece, code);
	Status first_error;
	for (const auto &mapping : *mappings) {
		const int part_code = register_aligned(mapping.range, registered);
		if (part_code != 0 && first_error)
			first_error = uffd_explain_refused("pin", mapping.range, part_code);
	}
	return first_error;
}

} // namespace mrsync::detail
