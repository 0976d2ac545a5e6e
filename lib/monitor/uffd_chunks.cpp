/* SPDX-License-Identifier: MIT */
/* The userfaultfd source's coarse watches (uffd_source.hpp). Registering
 * each new registration's pages with the kernel cost a miss two
 * UFFDIO_REGISTERs (watch, then arm) -- each splitting a VMA -- plus a
 * PROCMAP_QUERY and a UFFDIO_ZEROPAGE (the proof): 5-7 us of a 6-8 us miss.
 * So the first watch in an area registers an aligned chunk of the mapping
 * around it, and the first proof proves the whole chunk; later watches and
 * proofs inside the chunk cost a map lookup, as long as the generation has
 * not moved since the proof.
 *
 * Why a kept proof is as good as a fresh one: it established that every
 * mapping of the chunk was armed and private anonymous, and such a mapping
 * can only go with an event (munmap, mremap, mmap(MAP_FIXED) -> UNMAP or
 * REMAP; madvise -> REMOVE), which moves the generation before the changing
 * thread resumes (rule 3). What neither proof can see is the same: a change
 * whose event is still queued (the fresh proof has that window between its
 * probe and the pin, the kept one until the monitor reads the event; either
 * way the event then invalidates what was pinned), and the blind spots of
 * docs/design.md ("What userfaultfd cannot see"). Memory the proof would not
 * vouch for (shared, file, hugetlb, SysV) is never proven here: it takes the
 * exact path of uffd_arming.cpp.
 *
 * The cost moves to the application: every munmap/madvise inside a chunk
 * now waits for the monitor to read its event, even where no registration
 * is, and the context resyncs for it (finding nothing to invalidate: the
 * resync filters ranges against the registrations). Chunks stay registered
 * until the source goes. */
#include <pthread.h>

#include <algorithm>

#include "uffd_source.hpp"

namespace mrsync::detail {
namespace {

/* Large enough that a cache of thousands of buffers arms a handful of
 * chunks, small enough that a chunk rarely reaches memory the application
 * churns for other purposes. A power of two. */
constexpr std::uint64_t kChunkBytes = 64ull << 20;

bool overlaps(Range a, Range b) { return a.start < b.end && b.start < a.end; }

/* The interval of `set` holding all of `range`, or empty. */
template <typename Set, typename End>
Range holding(const Set &set, Range range, End end_of)
{
	auto it = set.upper_bound(range.start);
	if (it == set.begin())
		return {};
	--it;
	if (end_of(it->second) < range.end)
		return {};
	return {it->first, end_of(it->second)};
}

Range holding(const std::map<std::uint64_t, std::uint64_t> &set, Range range)
{
	return holding(set, range, [](std::uint64_t end) { return end; });
}

} // namespace

void UffdSource::note_monitor_stack() noexcept
{
	pthread_attr_t attr;
	if (::pthread_getattr_np(thread_, &attr) != 0)
		return; /* unknown: chunk_for_locked() then makes no chunk */
	void *base = nullptr;
	std::size_t size = 0, guard = 0;
	if (::pthread_attr_getstack(&attr, &base, &size) == 0 &&
	    ::pthread_attr_getguardsize(&attr, &guard) == 0) {
		const auto start = reinterpret_cast<std::uint64_t>(base);
		/* the guard lies below the stack; keep a chunk off it too */
		monitor_stack_ = {start > guard ? start - guard : 0, start + size};
	}
	::pthread_attr_destroy(&attr);
}

/* The chunk registered for `range`, counting one more watch in it;
 * registering it first unless a kept proof holds `range` (then it is
 * registered still). Empty when `range` takes its own registration (the
 * exact path). A chunk registered earlier may have gone with its mapping (a
 * new mapping there is registered by nobody), so without a current proof
 * the chunk is looked up and registered again. */
Range UffdSource::chunk_for_locked(Range range)
{
	const auto end_of = [](const Chunk &c) { return c.end; };
	Range chunk = proven_locked(range) ? holding(chunks_, range, end_of) : Range{};
	if (!chunk.end) {
		chunk = coarse_chunk_locked(range);
		if (!chunk.end || uffd_register(uffd_.get(), chunk) != 0)
			return {}; /* EBUSY (another userfaultfd nearby)...: the exact path */
	}
	const auto it = chunks_.find(chunk.start);
	if (it != chunks_.end()) {
		if (it->second.end != chunk.end)
			return {}; /* an older chunk's place: the exact path, which
				    * registers again -- harmless */
		++it->second.watches;
		return chunk;
	}
	try {
		coverage_.add(chunk);
		try {
			chunks_.emplace(chunk.start, Chunk{chunk.end, 1});
		} catch (...) {
			for (const Range &piece : coverage_.remove(chunk))
				disarm(piece);
			throw;
		}
	} catch (const std::bad_alloc &) {
		return {}; /* still registered: only spurious events */
	}
	return chunk;
}

/* One watch less in `chunk`; the last one unregisters what no other watch
 * covers, and the kept proofs go with it (they say "armed"). */
void UffdSource::release_chunk_locked(Range chunk) noexcept
{
	const auto it = chunks_.find(chunk.start);
	if (it == chunks_.end() || it->second.end != chunk.end || --it->second.watches > 0)
		return;
	chunks_.erase(it);
	proven_.clear();
	try {
		for (const Range &piece : coverage_.remove(chunk))
			disarm(piece);
	} catch (...) {
		/* Left registered: only spurious events. */
	}
}

/* Whether `m` is memory a chunk may span: plain private anonymous memory
 * with base pages (hugetlb wants its own alignment; a named one -- [stack],
 * [anon:...] -- grows, shrinks or is somebody's own), off the monitor's
 * stack. */
bool UffdSource::chunkable(const Mapping &m) const noexcept
{
	return m.private_anonymous() && m.name.empty() && m.page_size == page_size() &&
	       !overlaps(m.range, monitor_stack_);
}

/* The aligned chunk around `range` clipped to the one mapping that holds
 * it, if chunkable; else empty. One PROCMAP_QUERY, however fragmented the
 * address space is around it. */
Range UffdSource::coarse_chunk_locked(Range range)
{
	if (!monitor_stack_.end)
		return {};
	const auto window = align_out(range, kChunkBytes);
	const auto m = mapping_at(range.start);
	if (!window || !m || m->range.end < range.end || !chunkable(*m))
		return {};
	return {std::max(m->range.start, window->start), std::min(m->range.end, window->end)};
}

/* Whether a kept proof covers `range` at the current generation. */
bool UffdSource::proven_locked(Range range)
{
	const std::uint64_t now = events().load_generation();
	if (now != proven_gen_) {
		proven_.clear();
		proven_gen_ = now;
		return false;
	}
	return holding(proven_, range).end != 0;
}

/* Arm, look, prove the mapping around `range` inside `chunk` once -- one
 * mapping, so its cost does not grow with the mappings of the chunk -- and
 * keep the proof if it passes. Takes mu_ for the bookkeeping only.
 * @return whether it passed. */
bool UffdSource::prove_chunk(Range chunk, Range range)
{
	/* read_begin: an event from here on moves the generation past `begin`,
	 * and the kept proof is dropped at its first use. */
	const std::uint64_t begin = events().load_generation();
	const auto m = mapping_at(range.start);
	if (!m || m->range.end < range.end || !chunkable(*m))
		return false;
	const Range piece{std::max(m->range.start, chunk.start), std::min(m->range.end, chunk.end)};
	{
		std::lock_guard lock(mu_);
		if (!arm(piece))
			return false;
	}
	auto mappings = uffd_check_sees_all("pin", piece);
	if (!mappings || probe_armed(*mappings, piece) != 0)
		return false;
	std::lock_guard lock(mu_);
	if (begin != proven_gen_) {
		proven_.clear();
		proven_gen_ = begin;
	}
	try {
		proven_[piece.start] = piece.end;
	} catch (const std::bad_alloc &) {
		/* not kept: the next pin proves again */
	}
	return true;
}

} // namespace mrsync::detail
