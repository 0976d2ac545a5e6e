/* SPDX-License-Identifier: MIT */
/* The userfaultfd source's life cycle (uffd_source.hpp): creating it
 * (the descriptors and the monitor thread), destroying it, abandoning it in
 * a fork child (rule 5), and its registration as MRSYNC_SOURCE_UFFD. */
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <new>

#include <mrsync/mrsync.h>

#include "fork_guard.hpp"
#include "format.hpp"
#include "uffd_source.hpp"

namespace mrsync::detail {
namespace {

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

} // namespace

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
			fork_register(ForkPhase::sources, {.prepare = before_fork,
							   .parent = after_fork_in_parent,
							   .child = after_fork_in_child});
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
		return make_error(ENOMEM, "userfaultfd source: no memory for the event buffer");
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
	source->note_monitor_stack();
	::pthread_setname_np(source->thread_, "mrsync-uffd");
	LiveSources::get().add(source.get());
	return std::unique_ptr<EventSource>(std::move(source));
}

UffdSource::~UffdSource()
{
	/* In a fork child (or a child of a raw clone(), which fork handlers do
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
			chunks_.clear();
			proven_.clear();
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

namespace {

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
} // namespace mrsync::detail

MRSYNC_REGISTER_SOURCE(mrsync::detail::uffd_factory)
