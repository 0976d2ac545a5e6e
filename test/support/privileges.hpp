// Tests only: lose a privilege root has, to see what an unprivileged user sees.
#ifndef MRSYNC_TEST_PRIVILEGES_HPP
#define MRSYNC_TEST_PRIVILEGES_HPP

#include <linux/capability.h>
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

} // namespace mrsync::test

#endif
