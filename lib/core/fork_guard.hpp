/* SPDX-License-Identifier: MIT */
/*
 * Private. fork() support: the one place the library registers fork
 * handlers, so that they run in an order written down here rather than in
 * the order pthread_atfork() happened to be called.
 *
 * A child inherits the contexts but not the parent's threads, nor the
 * parent's device objects (the io_uring instance, the userfaultfd, the module
 * file are shared with or bound to the parent). Each component registers one
 * ForkHandlers set in a phase; the phases run
 *
 *   prepare (parent, before fork), in phase order:
 *     1. contexts  take every context lock (so no lock is inherited held by a
 *                  thread the child does not have) and note the generation
 *                  the parent showed;
 *     2. sources   freeze each source kind's list of live sources, so the
 *                  child sees it whole.
 *   parent (parent, after fork), in reverse phase order:
 *     2. sources   release the lists;
 *     1. contexts  release the context locks.
 *   child (child, before fork() returns), in reverse phase order:
 *     2. sources   drop what is the parent's before anything else runs: the
 *                  userfaultfd source closes its descriptors (a child that
 *                  kept them could stop the parent's monitor), the module
 *                  source maps a blank page where its generation word was;
 *                  then release the lists;
 *     1. contexts  mark every context forked (its next lookup rebuilds the
 *                  driver and the sources and re-pins every region in the
 *                  child's own address space) and release its lock.
 *
 * Within a phase, handlers run in registration order for prepare and in the
 * reverse order after fork, as locks nest. Handlers run in the middle of
 * fork(): they must not allocate in the child, and take only the locks
 * their own prepare handler took.
 */
#ifndef MRSYNC_FORK_GUARD_HPP
#define MRSYNC_FORK_GUARD_HPP

namespace mrsync::detail {

class Context;

/** The order fork handlers run in; see the comment above. */
enum class ForkPhase {
	contexts = 0,
	sources = 1,
};

/** One component's handlers; a null pointer does nothing. */
struct ForkHandlers {
	void (*prepare)() noexcept = nullptr;
	void (*parent)() noexcept = nullptr;
	void (*child)() noexcept = nullptr;
};

/**
 * Adds a component's handlers to `phase`. Call once per component (behind a
 * std::call_once or a function-local static); handlers are never removed.
 * Aborts if the fixed table is full (a programming error: it has room for
 * every component the library has).
 * Thread safety: any thread; not from inside a fork handler.
 */
void fork_register(ForkPhase phase, ForkHandlers handlers);

/** Adds a context to / removes it from the contexts phase.
 *  Thread safety: any thread; not under the context's own lock. */
void fork_guard_add(Context *ctx);
void fork_guard_remove(Context *ctx);

} // namespace mrsync::detail

#endif
