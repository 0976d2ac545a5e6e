/* SPDX-License-Identifier: MIT */
/* Opening the userfaultfd (uffd_source.hpp), and saying why the kernel
 * refused it: EPERM has several causes the process can partly tell apart. */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

#include "format.hpp"
#include "uffd_source.hpp"

namespace mrsync::detail {
namespace {

constexpr std::uint64_t kFeatures =
	UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP;

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
} // namespace

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

} // namespace mrsync::detail
