/* SPDX-License-Identifier: MIT */
/* The userfaultfd source's errors (uffd_source.hpp): what it cannot watch
 * or cannot see, said with the range and the mappings at fault, and what to
 * do about it. */
#include "address_space.hpp"
#include "format.hpp"
#include "uffd_source.hpp"

namespace mrsync::detail {

Status uffd_explain_unmapped(std::string_view what, Range range)
{
	std::string message = std::string(what) + ": " + format_range(range);
	auto mappings = mappings_in(range);
	if (mappings && mappings->empty())
		return make_error(EFAULT, message + " is not mapped");
	message += " is not mapped, or not entirely";
	if (mappings) {
		const auto holes = holes_in(range, *mappings);
		if (!holes.empty())
			message += " (" + format_range(holes.front()) + " is not" +
				   (holes.size() > 1 ? ", among others)" : ")");
	}
	return make_error(EFAULT, std::move(message));
}

Status uffd_explain_refused(std::string_view what, Range range, int code)
{
	std::string message = std::string(what) + ": userfaultfd cannot watch " + format_range(range);
	if (code == EBUSY)
		return make_error(EBUSY, message + ": another userfaultfd already watches part "
						   "of it (another mrsync context or library?)");
	if (code != EINVAL && code != EPERM)
		return make_error(code, message + ": " + errno_text(code));

	message += ": it serves private anonymous memory only (other memory needs the mrsync "
		   "kernel module as the event source: modprobe mrsync)";
	if (auto mappings = mappings_in(range)) {
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
Result<std::vector<Mapping>> uffd_check_sees_all(std::string_view what, Range range)
{
	auto mappings = mappings_in(range);
	if (!mappings)
		return make_error(ENOTSUP, std::string(what) + ": cannot tell what is mapped at " +
						   format_range(range) + " (" +
						   mappings.error().message + ")");
	/* A hole was not armed: a mapping that fills it later is registered by
	 * nobody, so its next change would go unreported. Pin none of it (the
	 * next lookup arms what is there then). */
	if (const auto holes = holes_in(range, *mappings); !holes.empty())
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

} // namespace mrsync::detail
