/* SPDX-License-Identifier: MIT */
/*
 * PRIVATE to lib/monitor. The userfaultfd event source (MRSYNC_SOURCE_UFFD),
 * for hosts without the kernel module. Its files, one concern each:
 *   uffd_source.hpp      this class and the rules below;
 *   uffd_source.cpp      life cycle: create, destroy, fork (abandon), the factory;
 *   uffd_monitor.cpp     the monitor thread that reads the events;
 *   uffd_arming.cpp      watch/unwatch/prepare_pin: registering with the kernel;
 *   uffd_chunks.cpp      coarse watches: a chunk registered once, proofs kept;
 *   uffd_open.cpp        opening the userfaultfd, and why it was refused (EPERM);
 *   uffd_messages.cpp    what userfaultfd cannot watch or see, as messages.
 *
 * Watched ranges are registered with UFFDIO_REGISTER_MODE_WP and nothing is
 * ever write-protected, so no page fault is routed to us; only the events
 * are: UNMAP (munmap, mmap(MAP_FIXED) over the range, mremap shrinking it),
 * REMOVE (madvise DONTNEED/FREE/REMOVE) and REMAP (mremap moving it). Not
 * FORK: without it a fork child's copies of our mappings are not registered,
 * so the child can unmap them without anybody reading its events.
 *
 * The kernel makes the changing thread wait until its event has been read:
 * with no reader, munmap() never returns. Hence the rules this file keeps:
 *  1. A monitor thread always reads the events, whatever else happens.
 *  2. The monitor never waits for anything a thread blocked in munmap() may
 *     hold: it takes no lock but the event buffers' (held only for O(1) work,
 *     never across a system call or an allocation), never allocates (free()
 *     may itself madvise()/munmap() watched heap memory and would then wait
 *     for... the monitor), and never unmaps anything.
 *  3. The read() that dequeues an event wakes the changing thread at once,
 *     before the monitor has appended the range: so the monitor announces
 *     the batch (moving the generation) *before* read(), and drain() waits
 *     for the announced batch. munmap() therefore returns after the
 *     generation has moved, and whoever drains then finds the range.
 *  4. watch/unwatch/rearm take their own lock (mu_) around UFFDIO_REGISTER /
 *     UNREGISTER, which take mmap_lock; the monitor never takes mu_, and the
 *     kernel drops mmap_lock before a changing thread waits for its event.
 *  5. A fork child inherits the userfaultfd and the eventfd, not the monitor.
 *     Every fork child abandons its copies at once (the sources phase of
 *     the fork registry, fork_guard.hpp): else a
 *     child that destroyed its copy would wake the *parent's* monitor through
 *     the shared eventfd and stop it, and a long-lived child would keep the
 *     userfaultfd context alive after the parent closed it, so registrations
 *     nobody tracks (an mremap destination) would make the parent's next
 *     munmap() of them wait forever for a reader.
 */
#ifndef MRSYNC_MONITOR_UFFD_SOURCE_HPP
#define MRSYNC_MONITOR_UFFD_SOURCE_HPP

#include <pthread.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <mrsync/event_buffer.hpp>

#include "address_space.hpp"
#include "coverage.hpp"
#include "unique_fd.hpp"
#include "unique_mmap.hpp"

namespace mrsync::detail {

/* uffd_open.cpp: opens a userfaultfd that reports UNMAP, REMOVE and REMAP
 * events; an error says why not (EPERM: which setting forbids it). */
Result<UniqueFd> open_uffd();

/* uffd_arming.cpp: UFFDIO_REGISTER / UNREGISTER; 0 or an errno, the
 * transient failures retried. */
int uffd_register(int uffd, Range range) noexcept;
int uffd_unregister(int uffd, Range range) noexcept;
/* Whether the mapping holding [va, va + len) is registered with `uffd`
 * (0), or ENOENT, EAGAIN (an event is being delivered), another errno;
 * `zeros` (len bytes) for a hugetlb mapping, else null. */
int uffd_probe(int uffd, std::uint64_t va, std::uint64_t len, const void *zeros) noexcept;

/* uffd_messages.cpp: the errors of watch and pin, each naming the range,
 * `what` the operation ("watch", "pin"). */
/* EFAULT: [range) is not mapped, or not all of it (which part is not). */
Status uffd_explain_unmapped(std::string_view what, Range range);
/* The kernel refused to register `range` with `code`: EBUSY (another
 * userfaultfd), ENOTSUP (memory it does not serve, naming the mappings),
 * else `code` itself. */
Status uffd_explain_refused(std::string_view what, Range range, int code);
/* What is mapped in `range`, if userfaultfd sees every change of it; else
 * EFAULT (a hole) or ENOTSUP (a shared or file mapping, named). */
Result<std::vector<Mapping>> uffd_check_sees_all(std::string_view what, Range range);

class UffdSource final : public BufferedEventSource {
public:
	/** Opens the userfaultfd and starts the monitor thread.
	 *  Thread safety: any thread. */
	static Result<std::unique_ptr<EventSource>> create(const SourceConfig &config);
	/** Unregisters what is watched, stops and joins the monitor.
	 *  Thread safety: no other call on the source may be running. */
	~UffdSource() override;

	std::string_view name() const noexcept override { return "userfaultfd"; }
	/** Registers [va, va + len) rounded out to pages (huge pages inside
	 *  hugetlb mappings). @return a handle, or EINVAL (empty, wraps), EFAULT
	 *  (not all mapped), ENOTSUP (a mapping userfaultfd cannot register),
	 *  EBUSY (another userfaultfd watches it), ENODEV (abandoned). Whether it
	 *  can see every change there is prepare_pin()'s answer.
	 *  Thread safety: any thread; takes mu_ (never the monitor's). */
	Result<std::uint64_t> watch(std::uint64_t va, std::uint64_t len) override;
	/** Unregisters what no other watch covers; unknown handles are ignored.
	 *  Thread safety: any thread; takes mu_. */
	void unwatch(std::uint64_t handle) noexcept override;
	/** Registers the mapped parts of `range` again (after mmap(MAP_FIXED)
	 *  replaced them; holes are skipped), checks that userfaultfd sees
	 *  every change of what is mapped there now, and proves that what it
	 *  checked is registered (probe_armed). Nothing more: userfaultfd
	 *  cannot tell when a MADV_DONTNEED it reported has finished zapping
	 *  (docs/design.md, "What userfaultfd cannot see").
	 *  @return EINVAL (empty, wraps), ENOTSUP (`handle` does not watch all of
	 *  `range`; a mapping userfaultfd cannot register or cannot fully see;
	 *  EBUSY from the kernel), EAGAIN (replaced again and again while
	 *  armed), after registering what it could.
	 *  Thread safety: any thread; takes mu_. */
	Status prepare_pin(std::uint64_t handle, Range range) override;
	/** The REMOVE ranges drained since the last call: reported before the
	 *  zap, which nothing here can see end.
	 *  Thread safety: the core's sources lock (SourceHub: one caller at a time). */
	bool drain_unsettled(std::vector<Range> &out) override { return unsettled_.drain(out); }
	/** Fork child: closes the descriptors; no join, no unregistering.
	 *  Runs by itself in every fork child (pthread_atfork); idempotent.
	 *  Thread safety: the child's only thread. */
	void abandon() noexcept override;

private:
	UffdSource(const SourceConfig &config, UniqueFd uffd, UniqueFd stop)
		: BufferedEventSource(config.ring_entries), unsettled_(config.ring_entries),
		  uffd_(std::move(uffd)), stop_(std::move(stop)), owner_(::getpid()),
		  unguarded_(config.test_unguarded)
	{
	}

	friend struct LiveSources;

	static void *monitor_main(void *self) noexcept;
	void monitor() noexcept;
	void read_events() noexcept;
	void resolve_fault(std::uint64_t address) noexcept;

	/* [va, va + len) validated and rounded out to pages; ENODEV if abandoned. */
	Result<Range> pages_of(std::uint64_t va, std::uint64_t len, std::string_view what) const;
	int register_aligned(Range range, Range &registered) noexcept;
	Status arm(Range piece);
	void disarm(Range piece) noexcept;
	int probe_armed(std::span<const Mapping> mappings, Range range);

	/* uffd_chunks.cpp (mu_ held): coarse watches. A watch inside a chunk
	 * this source registered costs no system call; a proof of a whole
	 * chunk ("arm, look, prove") is kept until the generation moves. */
	Range chunk_for_locked(Range range);
	void release_chunk_locked(Range chunk) noexcept;
	Range coarse_chunk_locked(Range range);
	bool proven_locked(Range range);
	bool prove_chunk(Range chunk, Range range);
	bool chunkable(const Mapping &m) const noexcept;
	void note_monitor_stack() noexcept;

	struct Watch {
		Range range; /* what this watch asked for, pages */
		Range chunk; /* the coarse registration holding it; empty: its own */
	};

	EventBuffer unsettled_; /* REMOVE ranges: the monitor appends, drain_unsettled takes */
	UniqueFd uffd_;
	UniqueFd stop_; /* eventfd: the destructor asks the monitor to return */
	pthread_t thread_{};
	bool thread_started_ = false;
	bool abandoned_ = false;
	const pid_t owner_; /* the process whose monitor this is */
	const bool unguarded_; /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS: no uffd_check_sees_all */
	bool listed_ = false; /* in LiveSources' list */
	UffdSource *live_prev_ = nullptr; /* that list, under its lock */
	UffdSource *live_next_ = nullptr;

	/* Guards the watch bookkeeping below and serialises REGISTER/UNREGISTER.
	 * Never taken by the monitor (rule 4 above). */
	std::mutex mu_;
	detail::Coverage coverage_;
	std::map<std::uint64_t, Watch> watches_; /* by handle */
	/* Coarse registrations by start: kept while a watch is inside. One
	 * whose mapping went is registered again by the next watch in it. */
	struct Chunk {
		std::uint64_t end;
		std::uint32_t watches;
	};
	std::map<std::uint64_t, Chunk> chunks_;
	/* Chunks proven armed and private anonymous at generation proven_gen_
	 * (start -> end); stale, and cleared, once the generation moved. */
	std::map<std::uint64_t, std::uint64_t> proven_;
	std::uint64_t proven_gen_ = ~0ull;
	/* The monitor thread's stack: never inside a chunk (glibc madvise()s
	 * an exiting thread's stack, and the monitor would wait for itself). */
	Range monitor_stack_{};
	std::uint64_t next_handle_ = 1;
	/* Zeros to UFFDIO_COPY into a hugetlb page when probing (mu_); never
	 * written, so never backed by more than the zero page. */
	UniqueMmap zeros_;
};

} // namespace mrsync::detail

#endif
