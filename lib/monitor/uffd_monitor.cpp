/* SPDX-License-Identifier: MIT */
/* The userfaultfd source's monitor thread (uffd_source.hpp, rules 1-3): it
 * reads every event, whatever else happens, and publishes the ranges. It
 * takes no lock but the event buffers', allocates nothing and unmaps nothing. */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "address_space.hpp"
#include "uffd_source.hpp"

namespace mrsync::detail {
namespace {

/* Events read per read(): one per thread blocked in the kernel, so a batch is
 * rarely more than a few. On the monitor's stack (it must not allocate). */
constexpr std::size_t kBatch = 64;

} // namespace

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
		events().announce();
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
		events().publish({changed, count});
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
	std::uint64_t size = page_size();
	std::size_t next_huge = 0;
	const auto huge = huge_page_sizes();
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
	uffdio_range wake{address & ~(page_size() - 1), page_size()};
	::ioctl(uffd_.get(), UFFDIO_WAKE, &wake);
}

} // namespace mrsync::detail
