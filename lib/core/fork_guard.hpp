/* SPDX-License-Identifier: MIT */
/* Private. fork() support: a child inherits the contexts but not the parent's
 * device objects (the io_uring instance, the userfaultfd, the module file are
 * shared with or bound to the parent) nor its threads. The child handler
 * marks every context forked, which makes its next lookup rebuild the driver
 * and the sources and re-pin every region in the child's own address space.
 * The prepare handler takes every context lock so the child never inherits a
 * lock held by a thread that does not exist there. */
#ifndef MRSYNC_FORK_GUARD_HPP
#define MRSYNC_FORK_GUARD_HPP

namespace mrsync::detail {

class Context;

void fork_guard_add(Context *ctx);
void fork_guard_remove(Context *ctx);

} // namespace mrsync::detail

#endif
