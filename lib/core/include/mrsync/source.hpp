/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The event-source contract: something that learns, before an unmap completes,
 * that a watched range of the address space changed (the kernel module, a
 * userfaultfd monitor, DPDK memory events, the application itself).
 *
 * A source publishes a generation counter that the hit path reads with one
 * acquire load, and a ring of changed ranges. The rule: a reader that sees a
 * new generation finds the ranges when it drains. A producer appends, then
 * bumps (release); one that must bump before it can know the ranges (the
 * userfaultfd monitor wakes the unmapping thread the moment it reads the
 * event) announces with a bump, and drain() waits the few microseconds until
 * the ranges are published. A full ring is never an error: the source
 * reports overflow and the core resyncs everything.
 *
 * An event may arrive before the change it reports is complete (the kernel
 * module reports at invalidate_range_start, userfaultfd reports
 * MADV_DONTNEED before the zap): the core therefore never pins on the
 * strength of an event alone (docs/design.md).
 *
 * The contract, in the order the core uses it:
 *   watch() -> prepare_pin() -> (pin) -> generation re-checked -> ... ->
 *   drain() / drain_unsettled() whenever the generation moved -> unwatch()
 * plus abandon() in a fork child. Nothing here is specific to one source:
 * what only the manual source takes (the application's own reports) is the
 * separate ManualInput interface below. Sources are registered kinds
 * (MRSYNC_REGISTER_SOURCE, registry.hpp) and their fork handlers run in the
 * fixed order of the library's fork registry (lib/core/fork_guard.hpp).
 */
#ifndef MRSYNC_SOURCE_HPP
#define MRSYNC_SOURCE_HPP

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <mrsync/registry.hpp>
#include <mrsync/result.hpp>

/* Exported from libmrsync (lib/libmrsync.map says which symbols). */
#pragma GCC visibility push(default)

namespace mrsync {

/** A half-open virtual address range [start, end). */
struct Range {
	std::uint64_t start = 0;
	std::uint64_t end = 0;

	friend bool operator==(const Range &, const Range &) = default;
};

class EventSource {
public:
	virtual ~EventSource() = default;

	virtual std::string_view name() const noexcept = 0;

	/** The counter the hit path loads (acquire). Stable for the source's
	 *  lifetime; bumped after the ranges it covers have been appended. */
	virtual const std::uint64_t *generation() const noexcept = 0;

	/**
	 * Moves the ranges reported since the last drain into `out`.
	 * @return true if some were lost to a full ring: resync everything.
	 * Called with the lock of the core's shared sources held (SourceHub:
	 * every call of this contract comes one at a time, from the context's
	 * resync or a watcher's poll); waits at most for an announced
	 * batch to be published, never for anything that needs that lock.
	 */
	virtual bool drain(std::vector<Range> &out) = 0;

	/**
	 * Moves into `out` the ranges reported since the last call whose change
	 * was still in progress when reported, and whose end this source cannot
	 * observe -- so prepare_pin() cannot settle them (userfaultfd reports
	 * MADV_DONTNEED before the zap). Each also went through drain(). The
	 * core then pins such a range only for a lookup that needs it now.
	 * @return true if some were lost: treat every range as unsettled.
	 * Called with the same lock held, after drain().
	 */
	virtual bool drain_unsettled(std::vector<Range> & /*out*/) { return false; }

	/**
	 * Starts reporting changes of [va, va + len); called before the range is
	 * pinned, so a change between watch and pin is reported. Watching is not
	 * vouching: prepare_pin() follows before any pin and says whether this
	 * source can see every change of what is mapped there.
	 * @return a handle for unwatch() and prepare_pin(), never 0; ENOTSUP (or
	 *         EBUSY) with the reason if it cannot watch that memory at all.
	 */
	virtual Result<std::uint64_t> watch(std::uint64_t va, std::uint64_t len) = 0;

	/** Stops reporting changes for a handle returned by watch(). */
	virtual void unwatch(std::uint64_t handle) noexcept = 0;

	/**
	 * Called right before `range`, inside what `handle` watches, is pinned:
	 * the begin half of the kernel's mmu_interval_read_begin/read_retry.
	 *  - Make sure every later change of the memory now mapped there is
	 *    reported (userfaultfd arms a mapping that replaced the watched one).
	 *  - Return only once no change reported so far is still in progress,
	 *    so the pin that follows sees its result (the module waits for the
	 *    invalidation to end; DPDK for the hotplug lock).
	 * The retry half is the generation: a change that starts after this
	 * call moves it, and the core re-checks it after pinning.
	 * @return ENOTSUP (with the reason) if this source cannot see every
	 *         change of what is mapped in `range` (userfaultfd and a shared
	 *         mapping, DPDK and memory that is not the EAL's), EFAULT if part
	 *         of it is not mapped: the core must not pin it on this source's
	 *         word, and refuses memory no source vouches for.
	 */
	virtual Status prepare_pin(std::uint64_t /*handle*/, Range /*range*/) { return {}; }

	/**
	 * Makes the source signal a pollable fd whenever it reports a change,
	 * for a consumer that sleeps in poll()/epoll instead of loading
	 * generation() (mrsync_watcher_fd(), subscribe.h). From this call on:
	 *  - the fd polls readable (POLLIN) once a change is reported, at the
	 *    latest when generation() moves for it;
	 *  - drain() clears it *before* it takes the ranges, so a change it
	 *    does not take leaves the fd readable: a wake-up may be spurious
	 *    (at most one per change), never missed;
	 *  - it is readable once right after this call (a change reported
	 *    before it is not lost either).
	 * The fd stays the source's; calling again returns the same one.
	 * @return the fd; ENOTSUP (with the reason) if this source cannot.
	 * Thread safety: any thread; called with the consumer's lock held.
	 */
	virtual Result<int> enable_wakeup()
	{
		return make_error(ENOTSUP, std::string(name()) + " source: no pollable fd");
	}

	/** The process is a fork child: drop the kernel objects without
	 *  touching them (see Driver::abandon()). A source with process-wide
	 *  state to fix before anything else runs in the child does that in
	 *  its own fork handler (fork_guard.hpp, phase `sources`); this is the
	 *  core's call, under the context lock and the sources' lock, before it
	 *  replaces the source. */
	virtual void abandon() noexcept = 0;
};

/**
 * What the application reports itself (mrsync_notify_unmap()), for the one
 * source that takes such reports: the manual source implements this next to
 * EventSource, and the context finds it with dynamic_cast. No other source
 * has anything to do with it, so it is not part of EventSource.
 */
class ManualInput {
public:
	/** Records that [changed.start, changed.end) was unmapped or remapped.
	 *  @return EINVAL (naming the range) if it is empty or inverted.
	 *  Thread safety: any thread; never waits for the context lock. */
	virtual Status notify(Range changed) = 0;

protected:
	~ManualInput() = default;
};

/** What the context passes to a source factory. */
struct SourceConfig {
	std::uint32_t ring_entries = 1024; /**< ring size; 0 = the source's default */
	/** MRSYNC_CTX_F_TEST_UNGUARDED_PINS: watch() accepts memory the source
	 *  cannot fully see, as before the guard existed (tests only). */
	bool test_unguarded = false;
};

/** A source kind, registered at start-up by MRSYNC_REGISTER_SOURCE. */
struct SourceFactory {
	const char *name;
	std::uint32_t kind; /**< one MRSYNC_SOURCE_* bit */
	bool (*available)(std::string &why);
	Result<std::unique_ptr<EventSource>> (*create)(const SourceConfig &config);
};

extern template class Registry<SourceFactory>;

/** The registered kind for one MRSYNC_SOURCE_* bit, or nullptr. */
inline const SourceFactory *find_source(std::uint32_t kind)
{
	return Registry<SourceFactory>::find(
		[kind](const SourceFactory &factory) { return factory.kind == kind; });
}

} // namespace mrsync
#pragma GCC visibility pop

#define MRSYNC_REGISTER_SOURCE(factory) MRSYNC_REGISTER_FACTORY(factory)

#endif
