/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd event source (MRSYNC_SOURCE_UFFD), for hosts without the
 * kernel module.
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
 *     hold: it takes no lock but the event ring's (held only for O(1) work,
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
 *     Every fork child abandons its copies at once (pthread_atfork): else a
 *     child that destroyed its copy would wake the *parent's* monitor through
 *     the shared eventfd and stop it, and a long-lived child would keep the
 *     userfaultfd context alive after the parent closed it, so registrations
 *     nobody tracks (an mremap destination) would make the parent's next
 *     munmap() of them wait forever for a reader.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <span>

#include <mrsync/event_ring.hpp>
#include <mrsync/mrsync.h>

#include "address_space.hpp"
#include "coverage.hpp"
#include "unique_fd.hpp"

namespace mrsync {
namespace {

using detail::format_range;
using detail::UniqueFd;

constexpr std::uint64_t kFeatures =
	UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP;

/* Events read per read(): one per thread blocked in the kernel, so a batch is
 * rarely more than a few. On the monitor's stack (it must not allocate). */
constexpr std::size_t kBatch = 64;

std::string errno_text(int code)
{
	char buffer[128];
	return strerror_r(code, buffer, sizeof buffer);
}

/* Why userfaultfd() said EPERM, as far as we can tell from here. */
std::string eperm_reason()
{
	int unprivileged = -1;
	if (FILE *file = std::fopen("/proc/sys/vm/unprivileged_userfaultfd", "re")) {
		if (std::fscanf(file, "%d", &unprivileged) != 1)
			unprivileged = -1;
		std::fclose(file);
	}
	std::string reason = "userfaultfd: not permitted (";
	if (unprivileged == 0)
		reason += "vm.unprivileged_userfaultfd=0 and the process lacks CAP_SYS_PTRACE, or ";
	return reason + "a seccomp or LSM policy forbids the system call)";
}

/* Opens a userfaultfd that reports UNMAP, REMOVE and REMAP events. */
Result<UniqueFd> open_uffd()
{
	/* USER_MODE_ONLY: faults from kernel mode would not be ours to handle
	 * (and we never want faults at all); it is also what the kernel lets
	 * unprivileged processes have when vm.unprivileged_userfaultfd=0.
	 * Kernels before 5.11 refuse the flag: retry without it. */
	UniqueFd fd(static_cast<int>(
		::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
	if (!fd)
		fd.reset(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
	if (!fd) {
		const int code = errno;
		if (code == ENOSYS)
			return make_error(ENOSYS, "userfaultfd: the kernel was built without "
						  "CONFIG_USERFAULTFD");
		if (code == EPERM)
			return make_error(EPERM, eperm_reason());
		return make_error(code, "userfaultfd: " + errno_text(code));
	}

	uffdio_api api{};
	api.api = UFFD_API;
	api.features = kFeatures;
	if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) {
		const int code = errno;
		return make_error(code == EINVAL ? ENOTSUP : code,
				  "userfaultfd: the kernel does not offer unmap, remove and "
				  "remap events (UFFDIO_API: " + errno_text(code) + ")");
	}
	constexpr std::uint64_t kIoctls =
		(1ull << _UFFDIO_REGISTER) | (1ull << _UFFDIO_UNREGISTER);
	if ((api.features & kFeatures) != kFeatures || (api.ioctls & kIoctls) != kIoctls)
		return make_error(ENOTSUP, "userfaultfd: the kernel does not offer unmap, "
					   "remove and remap events with register/unregister");
	return fd;
}

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

/* Whether the mapping holding [va, va + len) is registered with `uffd`,
 * asked without changing anything a later pin would not change anyway:
 * UFFDIO_ZEROPAGE (UFFDIO_COPY of zeros for hugetlb) fails with ENOENT on a
 * mapping no userfaultfd watches, EEXIST on a page already there, and
 * otherwise puts in the zero page a first touch would have put in (no mmu
 * notifier runs: it fills, it does not invalidate). EAGAIN: an event is
 * being delivered (the caller retries). @return 0 (registered) or an errno. */
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

/* Blocks every signal for its lifetime: a thread created meanwhile starts
 * with all signals blocked, so no application handler ever runs on the
 * monitor (a handler that unmapped watched memory would wait for itself). */
class BlockSignals {
public:
	BlockSignals() noexcept
	{
		sigset_t all;
		sigfillset(&all);
		::pthread_sigmask(SIG_SETMASK, &all, &saved_);
	}
	~BlockSignals() { ::pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
	BlockSignals(const BlockSignals &) = delete;
	BlockSignals &operator=(const BlockSignals &) = delete;

private:
	sigset_t saved_;
};

class UffdSource final : public RingEventSource {
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
	 *  replaced them; holes are skipped), then checks that userfaultfd sees
	 *  every change of what is mapped there now. Nothing more: userfaultfd
	 *  cannot tell when a MADV_DONTNEED it reported has finished zapping
	 *  (docs/design.md, "What userfaultfd cannot see").
	 *  @return EINVAL (empty, wraps), ENOTSUP (`handle` does not watch all of
	 *  `range`; a mapping userfaultfd cannot register or cannot fully see;
	 *  EBUSY from the kernel), after registering what it could.
	 *  Thread safety: any thread; takes mu_. */
	Status prepare_pin(std::uint64_t handle, Range range) override;
	/** The REMOVE ranges drained since the last call: reported before the
	 *  zap, which nothing here can see end.
	 *  Thread safety: the context lock (one caller at a time). */
	bool drain_unsettled(std::vector<Range> &out) override { return unsettled_.drain(out); }
	/** Fork child: closes the descriptors; no join, no unregistering.
	 *  Runs by itself in every fork child (pthread_atfork); idempotent.
	 *  Thread safety: the child's only thread. */
	void abandon() noexcept override;

private:
	UffdSource(const SourceConfig &config, UniqueFd uffd, UniqueFd stop)
		: RingEventSource(config.ring_entries), unsettled_(config.ring_entries),
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
	Status explain_unmapped(std::string_view what, Range range) const;
	Status explain_refused(std::string_view what, Range range, int code) const;
	Result<std::vector<detail::Mapping>> check_sees_all(std::string_view what,
							     Range range) const;
	int probe_armed(std::span<const detail::Mapping> mappings, Range range);
	Status arm(Range piece);
	void disarm(Range piece) noexcept;

	EventRing unsettled_; /* REMOVE ranges: the monitor appends, drain_unsettled takes */
	UniqueFd uffd_;
	UniqueFd stop_; /* eventfd: the destructor asks the monitor to return */
	pthread_t thread_{};
	bool thread_started_ = false;
	bool abandoned_ = false;
	const pid_t owner_; /* the process whose monitor this is */
	const bool unguarded_; /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS: no check_sees_all */
	bool listed_ = false; /* in LiveSources' list */
	UffdSource *live_prev_ = nullptr; /* that list, under its lock */
	UffdSource *live_next_ = nullptr;

	/* Guards the watch bookkeeping below and serialises REGISTER/UNREGISTER.
	 * Never taken by the monitor (rule 4 above). */
	std::mutex mu_;
	detail::Coverage coverage_;
	std::map<std::uint64_t, Range> watches_; /* handle -> range registered */
	/* Zeros to UFFDIO_COPY into a hugetlb page when probing (mu_); never
	 * written, so never backed by more than the zero page. */
	void *zeros_ = nullptr;
	std::uint64_t zeros_len_ = 0;
	std::uint64_t next_handle_ = 1;
};

/* Every live source of the process, so that a fork child can abandon its
 * copies before anything else runs in it (rule 5). Never destroyed: fork may
 * come during exit. */
struct LiveSources {
	std::mutex mu;
	UffdSource *head = nullptr;

	static LiveSources &get()
	{
		static LiveSources *live = [] {
			auto *created = new LiveSources;
			::pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);
			return created;
		}();
		return *live;
	}

	void add(UffdSource *source)
	{
		std::lock_guard lock(mu);
		source->listed_ = true;
		source->live_next_ = head;
		if (head)
			head->live_prev_ = source;
		head = source;
	}

	void remove(UffdSource *source)
	{
		std::lock_guard lock(mu);
		if (source->live_prev_)
			source->live_prev_->live_next_ = source->live_next_;
		else if (head == source)
			head = source->live_next_;
		if (source->live_next_)
			source->live_next_->live_prev_ = source->live_prev_;
		source->live_prev_ = source->live_next_ = nullptr;
	}

	/* The list cannot change between before_fork and the child handler. */
	static void before_fork() noexcept { get().mu.lock(); }
	static void after_fork_in_parent() noexcept { get().mu.unlock(); }
	static void after_fork_in_child() noexcept
	{
		LiveSources &live = get();
		for (UffdSource *source = live.head; source; source = source->live_next_)
			source->abandon(); /* close() only: async-signal-safe */
		live.mu.unlock();
	}
};

Result<std::unique_ptr<EventSource>> UffdSource::create(const SourceConfig &config)
{
	auto uffd = open_uffd();
	if (!uffd)
		return std::move(uffd).error();
	UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	if (!stop)
		return make_error(errno, "userfaultfd source: eventfd: " + errno_text(errno));

	std::unique_ptr<UffdSource> source;
	try {
		source.reset(new UffdSource(config, std::move(*uffd), std::move(stop)));
	} catch (const std::bad_alloc &) {
		return make_error(ENOMEM, "userfaultfd source: no memory for the event ring");
	}
	int code;
	{
		BlockSignals blocked;
		code = ::pthread_create(&source->thread_, nullptr, monitor_main, source.get());
	}
	if (code != 0)
		return make_error(code, "userfaultfd source: cannot start the monitor thread: " +
						errno_text(code));
	source->thread_started_ = true;
	::pthread_setname_np(source->thread_, "mrsync-uffd");
	LiveSources::get().add(source.get());
	return std::unique_ptr<EventSource>(std::move(source));
}

UffdSource::~UffdSource()
{
	/* In a fork child (or a child of a raw clone(), which pthread_atfork does
	 * not see) nothing here is ours to undo, and writing the eventfd would
	 * stop the parent's monitor. */
	if (!abandoned_ && ::getpid() == owner_) {
		/* Unregister while the monitor still runs, so a thread unmapping
		 * watched memory right now still has its event read. */
		{
			std::lock_guard lock(mu_);
			try {
				for (const Range &piece : coverage_.all())
					disarm(piece);
			} catch (...) {
				/* No memory for the list: closing the userfaultfd
				 * below unregisters everything anyway. */
			}
			coverage_.clear();
			watches_.clear();
			if (zeros_)
				munmap(zeros_, zeros_len_);
		}
		if (thread_started_) {
			const std::uint64_t one = 1;
			while (::write(stop_.get(), &one, sizeof one) < 0 && errno == EINTR) {
			}
			::pthread_join(thread_, nullptr);
		}
		/* Closing the userfaultfd also unregisters what nobody tracks (an
		 * mremap destination) and releases any thread still waiting for
		 * an event (there should be none: the monitor read them all). It
		 * happens before the source leaves the live list, so a fork
		 * meanwhile still drops the child's copy (rule 5). */
		uffd_.reset();
		stop_.reset();
	}
	if (listed_)
		LiveSources::get().remove(this);
}

void *UffdSource::monitor_main(void *self) noexcept
{
	static_cast<UffdSource *>(self)->monitor();
	return nullptr;
}

void UffdSource::monitor() noexcept
{
	pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
	for (;;) {
		if (::poll(fds, 2, -1) < 0)
			continue; /* EINTR; ENOMEM: try again, we must keep reading */
		if (fds[1].revents) {
			/* Read what is queued, so nobody stays blocked. */
			read_events();
			return;
		}
		if (fds[0].revents)
			read_events();
	}
}

void UffdSource::read_events() noexcept
{
	uffd_msg messages[kBatch];
	Range changed[kBatch];
	Range removed[kBatch];
	for (;;) {
		/* Rule 3: the generation moves before read() wakes anybody. */
		ring().announce();
		const ssize_t bytes = ::read(uffd_.get(), messages, sizeof messages);
		std::size_t count = 0, removes = 0;
		const std::size_t read_count =
			bytes > 0 ? static_cast<std::size_t>(bytes) / sizeof(uffd_msg) : 0;
		for (std::size_t i = 0; i < read_count; ++i) {
			const uffd_msg &message = messages[i];
			switch (message.event) {
			case UFFD_EVENT_REMOVE:
				/* madvise zaps after this read returns, when it next
				 * runs: nothing tells us when (drain_unsettled). */
				removed[removes++] = {message.arg.remove.start, message.arg.remove.end};
				[[fallthrough]];
			case UFFD_EVENT_UNMAP:
				changed[count++] = {message.arg.remove.start, message.arg.remove.end};
				break;
			case UFFD_EVENT_REMAP:
				/* The pages left [from, from + len); the new place was
				 * either unmapped (its own UNMAP event) or not ours. */
				changed[count++] = {message.arg.remap.from,
						    message.arg.remap.from + message.arg.remap.len};
				break;
			case UFFD_EVENT_PAGEFAULT:
				/* We never write-protect, so this should not happen;
				 * if it does, let the thread go rather than hang it. */
				resolve_fault(message.arg.pagefault.address);
				break;
			case UFFD_EVENT_FORK:
				/* Not requested; never leak the child's descriptor. */
				::close(static_cast<int>(message.arg.fork.ufd));
				break;
			default:
				/* Unknown: all we know is that something changed. */
				changed[count++] = {0, UINT64_MAX};
				break;
			}
		}
		/* Before the batch is published: a drain that finds it finds these. */
		unsettled_.append(std::span<const Range>(removed, removes));
		ring().publish({changed, count});
		/* A short read (or EAGAIN) emptied the queue; poll() says when
		 * more arrives. */
		if (bytes < static_cast<ssize_t>(sizeof messages))
			return;
	}
}

void UffdSource::resolve_fault(std::uint64_t address) noexcept
{
	/* Remove write protection from the page (which wakes the thread);
	 * hugetlb wants the whole huge page. As a last resort just wake it. */
	std::uint64_t size = detail::page_size();
	std::size_t next_huge = 0;
	const auto huge = detail::huge_page_sizes();
	for (;;) {
		uffdio_writeprotect request{};
		request.range.start = address & ~(size - 1);
		request.range.len = size;
		request.mode = 0;
		if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &request) == 0)
			return;
		if (next_huge == huge.size())
			break;
		size = huge[next_huge++];
	}
	uffdio_range wake{address & ~(detail::page_size() - 1), detail::page_size()};
	::ioctl(uffd_.get(), UFFDIO_WAKE, &wake);
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
	const std::uint64_t size = detail::kernel_page_size_at(range.start);
	if (size <= detail::page_size())
		return code;
	/* hugetlb mappings are aligned to their page size, so the rounded
	 * range stays inside the mapping that holds range.start. */
	const auto aligned = detail::align_out(range, size);
	if (!aligned || *aligned == range)
		return code;
	if (uffd_register(uffd_.get(), *aligned) == 0) {
		registered = *aligned;
		return 0;
	}
	return code;
}

Status UffdSource::explain_unmapped(std::string_view what, Range range) const
{
	std::string message = std::string(what) + ": " + format_range(range);
	auto mappings = detail::mappings_in(range);
	if (mappings && mappings->empty())
		return make_error(EFAULT, message + " is not mapped");
	message += " is not mapped, or not entirely";
	if (mappings) {
		const auto holes = detail::holes_in(range, *mappings);
		if (!holes.empty())
			message += " (" + format_range(holes.front()) + " is not" +
				   (holes.size() > 1 ? ", among others)" : ")");
	}
	return make_error(EFAULT, std::move(message));
}

Status UffdSource::explain_refused(std::string_view what, Range range, int code) const
{
	std::string message = std::string(what) + ": userfaultfd cannot watch " + format_range(range);
	if (code == EBUSY)
		return make_error(EBUSY, message + ": another userfaultfd already watches part "
						   "of it (another mrsync context or library?)");
	if (code != EINVAL && code != EPERM)
		return make_error(code, message + ": " + errno_text(code));

	message += ": it serves private anonymous memory only (other memory needs the mrsync "
		   "kernel module as the event source: modprobe mrsync)";
	if (auto mappings = detail::mappings_in(range)) {
		/* Named mappings other than [heap]/[stack] are the likely culprits. */
		int listed = 0;
		for (const auto &mapping : *mappings) {
			if (mapping.name.empty() || mapping.name.front() == '[' || listed == 3)
				continue;
			message += listed++ ? ", " : "; the range holds ";
			message += mapping.name + " at " + format_range(mapping.range);
		}
	}
	message += " (UFFDIO_REGISTER: " + errno_text(code) + ")";
	return make_error(ENOTSUP, std::move(message));
}

/* userfaultfd reports what this address space does to a mapping: unmap,
 * remap, madvise. The pages of a shared or file-backed mapping also change
 * through the file or another process -- hole punching, truncation, shmdt,
 * remap_file_pages, a sharer's madvise -- and of those it reports nothing:
 * a translation cached on its word would go stale unannounced. */
Result<std::vector<detail::Mapping>> UffdSource::check_sees_all(std::string_view what,
								  Range range) const
{
	if (unguarded_)
		return std::vector<detail::Mapping>{};
	auto mappings = detail::mappings_in(range);
	if (!mappings)
		return make_error(ENOTSUP, std::string(what) + ": cannot tell what is mapped at " +
						   format_range(range) + " (" +
						   mappings.error().message + ")");
	/* A hole was not armed: a mapping that fills it later is registered by
	 * nobody, so its next change would go unreported. Pin none of it (the
	 * next lookup arms what is there then). */
	if (const auto holes = detail::holes_in(range, *mappings); !holes.empty())
		return make_error(EFAULT, std::string(what) + ": " + format_range(holes.front()) +
						  " is not mapped");
	for (const auto &m : *mappings) {
		if (m.private_anonymous())
			continue;
		std::string kind = m.shared ? "a shared mapping" : "a private file mapping";
		if (!m.name.empty())
			kind += " of " + m.name;
		return make_error(ENOTSUP, std::string(what) + ": " + format_range(m.range) + " is " +
						   kind + ", whose pages can change without an unmap "
						   "(hole punching, truncation, shmdt, another process); "
						   "userfaultfd reports none of that, so it needs the "
						   "mrsync kernel module as the event source "
						   "(modprobe mrsync)");
	}
	return mappings;
}

Result<Range> UffdSource::pages_of(std::uint64_t va, std::uint64_t len, std::string_view what) const
{
	auto checked = detail::checked_range(va, len, what);
	if (!checked)
		return std::move(checked).error();
	if (abandoned_)
		return make_error(ENODEV, std::string(what) +
						  ": the userfaultfd source was abandoned (fork child)");
	return *detail::align_out(*checked, detail::page_size()); /* checked: no wrap */
}

Result<std::uint64_t> UffdSource::watch(std::uint64_t va, std::uint64_t len)
{
	auto pages = pages_of(va, len, "watch");
	if (!pages)
		return std::move(pages).error();
	const Range range = *pages;
	/* The kernel registers around holes without complaint; a watch over
	 * memory that is not there is the caller's mistake. */
	if (!detail::fully_mapped(range))
		return explain_unmapped("watch", range).error();

	std::lock_guard lock(mu_);
	Range registered;
	if (const int code = register_aligned(range, registered))
		return explain_refused("watch", range, code).error();
	try {
		coverage_.add(registered);
		try {
			watches_.emplace(next_handle_, registered);
		} catch (...) {
			for (const Range &piece : coverage_.remove(registered))
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
	try {
		/* Only what no other watch covers: overlapping watches share the
		 * kernel's registration. */
		for (const Range &piece : coverage_.remove(it->second))
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
		if (auto mappings = detail::mappings_in(piece))
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
	{
		std::lock_guard lock(mu_);
		const auto it = watches_.find(handle);
		if (it == watches_.end() || range.start < it->second.start ||
		    it->second.end < range.end)
			return make_error(ENOTSUP, "pin: " + format_range(range) +
							   " is not watched by this userfaultfd source");
	}
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
		auto mappings = check_sees_all("pin", range);
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
int UffdSource::probe_armed(std::span<const detail::Mapping> mappings, Range range)
{
	for (const auto &m : mappings) {
		const std::uint64_t va = std::max(m.range.start, range.start);
		const std::uint64_t size = detail::kernel_page_size_at(va);
		const void *zeros = nullptr;
		if (size > detail::page_size()) {
			std::lock_guard lock(mu_);
			if (zeros_len_ < size) {
				void *p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
					       -1, 0);
				if (p == MAP_FAILED)
					return errno;
				if (zeros_)
					munmap(zeros_, zeros_len_);
				zeros_ = p;
				zeros_len_ = size;
			}
			zeros = zeros_;
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
		return explain_refused("pin", piece, code);

	/* EINVAL: nothing mapped, or some mapping refused; EBUSY: another
	 * userfaultfd holds some of it. Arm what can be armed, report the rest. */
	auto mappings = detail::mappings_in(piece);
	if (!mappings)
		return explain_refused("pin", piece, code);
	Status first_error;
	for (const auto &mapping : *mappings) {
		const int part_code = register_aligned(mapping.range, registered);
		if (part_code != 0 && first_error)
			first_error = explain_refused("pin", mapping.range, part_code);
	}
	return first_error;
}

void UffdSource::abandon() noexcept
{
	/* The fork child has no monitor thread: do not join it (pthread_join
	 * would wait forever, or on a reused thread). Its mappings are not
	 * registered (no UFFD_FEATURE_EVENT_FORK), so there is nothing to
	 * unregister; and mu_ may have been held by a parent thread at fork
	 * time, so it is not taken. Closing the descriptors is all. */
	abandoned_ = true;
	thread_started_ = false;
	uffd_.reset();
	stop_.reset();
}

bool uffd_available(std::string &why)
{
	auto fd = open_uffd();
	if (fd)
		return true;
	why = fd.error().message;
	return false;
}

Result<std::unique_ptr<EventSource>> uffd_create(const SourceConfig &config)
{
	return UffdSource::create(config);
}

const SourceFactory uffd_factory{
	.name = "userfaultfd",
	.kind = MRSYNC_SOURCE_UFFD,
	.available = uffd_available,
	.create = uffd_create,
};

} // namespace
} // namespace mrsync

MRSYNC_REGISTER_SOURCE(mrsync::uffd_factory)
