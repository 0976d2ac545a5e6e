/* SPDX-License-Identifier: MIT */
#include <mrsync/mru.h>

#include "thread_state.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "format.hpp"

namespace mrsync::detail {

__thread TlsSlot tls_slots[kTlsSlots] __attribute__((tls_model("initial-exec")));

} // namespace mrsync::detail

/* mrsync/mru.h: the calling thread's kept entry, zero (empty) at start. */
__thread mrsync_mru mrsync_mru_tls __attribute__((tls_model("initial-exec")));

namespace mrsync::detail {

namespace {
int membarrier(int cmd)
{
	return static_cast<int>(syscall(__NR_membarrier, cmd, 0, 0));
}
/* Without expedited membarrier (an old kernel, or valgrind), fall back to the
 * global one, which also orders every thread but takes a scheduler round. */
std::atomic<int> barrier_cmd{MEMBARRIER_CMD_GLOBAL};
} // namespace

Status init_reader_sync()
{
	const int supported = membarrier(MEMBARRIER_CMD_QUERY);
	if (supported < 0)
		return make_error(ENOSYS, std::string("membarrier() is not available: ") +
						  errno_text(errno));
	if ((supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0) {
		barrier_cmd.store(MEMBARRIER_CMD_PRIVATE_EXPEDITED, std::memory_order_relaxed);
		return {};
	}
	if (!(supported & MEMBARRIER_CMD_GLOBAL))
		return make_error(ENOSYS, "membarrier() supports neither PRIVATE_EXPEDITED nor GLOBAL");
	return {};
}

void synchronize_readers() noexcept
{
	std::atomic_thread_fence(std::memory_order_seq_cst);
	if (membarrier(barrier_cmd.load(std::memory_order_relaxed)) != 0)
		std::atomic_thread_fence(std::memory_order_seq_cst);
}

} // namespace mrsync::detail
