// Tests only: lose a privilege root has, to see what an unprivileged user sees.
#ifndef MRSYNC_TEST_PRIVILEGES_HPP
#define MRSYNC_TEST_PRIVILEGES_HPP

#include <grp.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace mrsync::test {

/** Drops CAP_IPC_LOCK from the calling process (use in a fork child), so
 *  pins are charged against RLIMIT_MEMLOCK. @return false on failure. */
inline bool drop_ipc_lock()
{
	__user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
	__user_cap_data_struct data[2]{};
	if (::syscall(SYS_capget, &hdr, data) != 0)
		return false;
	const std::uint32_t bit = 1u << (CAP_IPC_LOCK % 32);
	data[CAP_IPC_LOCK / 32].effective &= ~bit;
	data[CAP_IPC_LOCK / 32].permitted &= ~bit;
	data[CAP_IPC_LOCK / 32].inheritable &= ~bit;
	return ::syscall(SYS_capset, &hdr, data) == 0;
}

/** In a fork child: RLIMIT_MEMLOCK down to `bytes`, CAP_IPC_LOCK dropped,
 *  and, when root, a user of its own (nobody). io_uring charges pinned pages
 *  to the *user*, so pins of other root processes -- tests running beside
 *  it, rings of earlier tests still being torn down -- would count against
 *  this child's small limit. @return false on failure. */
inline bool limit_memlock_as_own_user(rlim_t bytes)
{
	const rlimit small{bytes, bytes};
	if (!drop_ipc_lock() || ::setrlimit(RLIMIT_MEMLOCK, &small) != 0)
		return false;
	if (::geteuid() != 0)
		return true;
	return ::setgroups(0, nullptr) == 0 && ::setgid(65534) == 0 && ::setuid(65534) == 0;
}

} // namespace mrsync::test

#endif
