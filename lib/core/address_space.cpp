/* SPDX-License-Identifier: MIT */
#include "address_space.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "format.hpp"
#include "unique_fd.hpp"

namespace mrsync::detail {

std::uint64_t page_size() noexcept
{
	static const std::uint64_t size = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
	return size;
}

namespace {

struct HugePageSizes {
	std::array<std::uint64_t, 8> sizes{};
	std::size_t count = 0;

	HugePageSizes()
	{
		/* One directory per size: hugepages-2048kB, hugepages-1048576kB. */
		DIR *dir = ::opendir("/sys/kernel/mm/hugepages");
		if (!dir)
			return;
		while (const dirent *entry = ::readdir(dir)) {
			std::string_view name = entry->d_name;
			constexpr std::string_view prefix = "hugepages-";
			if (!name.starts_with(prefix) || count == sizes.size())
				continue;
			std::uint64_t kib = 0;
			auto [end, ec] = std::from_chars(name.data() + prefix.size(),
							 name.data() + name.size(), kib);
			if (ec == std::errc() && std::string_view(end) == "kB" && kib)
				sizes[count++] = kib * 1024;
		}
		::closedir(dir);
		std::sort(sizes.begin(), sizes.begin() + count);
	}
};

bool parse_hex(std::string_view &text, std::uint64_t &value)
{
	auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
	if (ec != std::errc())
		return false;
	text.remove_prefix(static_cast<std::size_t>(end - text.data()));
	return true;
}

/* Skips `fields` whitespace-separated fields and the blanks after them. */
void skip_fields(std::string_view &text, int fields)
{
	for (int i = 0; i < fields; ++i) {
		text.remove_prefix(std::min(text.find_first_not_of(' '), text.size()));
		text.remove_prefix(std::min(text.find(' '), text.size()));
	}
	text.remove_prefix(std::min(text.find_first_not_of(' '), text.size()));
}

/* The one parser of a /proc/self/maps line (also the first line of each
 * mapping in /proc/self/smaps): "start-end perms offset dev inode   name".
 * @return false for any other line. */
bool parse_maps_line(std::string_view line, Mapping &mapping)
{
	if (!parse_hex(line, mapping.range.start) || line.empty() || line.front() != '-')
		return false;
	line.remove_prefix(1);
	if (!parse_hex(line, mapping.range.end) || line.empty() || line.front() != ' ')
		return false;
	skip_fields(line, 0);
	mapping.readable = !line.empty() && line[0] == 'r';
	mapping.writable = line.size() > 1 && line[1] == 'w';
	mapping.shared = line.size() > 3 && line[3] == 's';
	skip_fields(line, 3); /* perms offset dev */
	mapping.inode = 0;
	auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), mapping.inode);
	(void)ec;
	line.remove_prefix(static_cast<std::size_t>(end - line.data()));
	skip_fields(line, 0);
	mapping.name = std::string(line);
	mapping.page_size = 0;
	return true;
}

/* Calls `each(line)` for every line of `text`, until it returns false. */
template <class Each>
void for_each_line(std::string_view text, Each &&each)
{
	while (!text.empty()) {
		const std::size_t eol = std::min(text.find('\n'), text.size());
		if (!each(text.substr(0, eol)))
			return;
		text.remove_prefix(std::min(eol + 1, text.size()));
	}
}

/* The whole of an open /proc file (they have no size to ask for). */
Result<std::string> read_all(int fd, const char *path)
{
	std::string text;
	char buffer[16384];
	for (;;) {
		const ssize_t n = ::read(fd, buffer, sizeof buffer);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return make_error(errno, fmt("cannot read %s: %s", path,
						     errno_text(errno).c_str()));
		if (n == 0)
			return text;
		text.append(buffer, static_cast<std::size_t>(n));
	}
}

} // namespace

std::span<const std::uint64_t> huge_page_sizes() noexcept
{
	static const HugePageSizes sizes;
	return {sizes.sizes.data(), sizes.count};
}

std::string format_range(Range range)
{
	return fmt("[%#llx, %#llx)", static_cast<unsigned long long>(range.start),
		   static_cast<unsigned long long>(range.end));
}

Result<Range> checked_range(std::uint64_t va, std::uint64_t len, std::string_view what)
{
	if (len == 0)
		return make_error(EINVAL, fmt("%.*s: empty range at %#llx",
					      static_cast<int>(what.size()), what.data(),
					      static_cast<unsigned long long>(va)));
	Range range{va, va + len};
	if (range.end < va || !align_out(range, page_size()))
		return make_error(EINVAL,
				  fmt("%.*s: range at %#llx of length %#llx wraps around the "
				      "address space",
				      static_cast<int>(what.size()), what.data(),
				      static_cast<unsigned long long>(va),
				      static_cast<unsigned long long>(len)));
	return range;
}

std::optional<Range> align_out(Range range, std::uint64_t align) noexcept
{
	const std::uint64_t mask = align - 1;
	if (range.end > UINT64_MAX - mask)
		return std::nullopt;
	return Range{range.start & ~mask, (range.end + mask) & ~mask};
}

bool fully_mapped(Range range) noexcept
{
	/* msync() fails with ENOMEM when part of the range is not mapped; with
	 * MS_ASYNC it does nothing else (a no-op since Linux 2.6.19), so it is
	 * the cheapest "is all of this mapped" the kernel offers. */
	return ::msync(reinterpret_cast<void *>(range.start), range.end - range.start,
		       MS_ASYNC) == 0;
}

namespace {

/* PROCMAP_QUERY (Linux 6.11, <linux/fs.h>), spelled out here because the
 * headers we build against predate it: an ioctl on /proc/self/maps that
 * answers for one mapping without printing the whole table. */
struct ProcmapQuery {
	std::uint64_t size;
	std::uint64_t query_flags;
	std::uint64_t query_addr;
	std::uint64_t vma_start;
	std::uint64_t vma_end;
	std::uint64_t vma_flags;
	std::uint64_t vma_page_size;
	std::uint64_t vma_offset;
	std::uint64_t inode;
	std::uint32_t dev_major;
	std::uint32_t dev_minor;
	std::uint32_t vma_name_size;
	std::uint32_t build_id_size;
	std::uint64_t vma_name_addr;
	std::uint64_t build_id_addr;
};
constexpr unsigned long kProcmapQuery = _IOWR('f', 17, ProcmapQuery);
constexpr std::uint64_t kQueryReadable = 0x01;
constexpr std::uint64_t kQueryWritable = 0x02;
constexpr std::uint64_t kQueryShared = 0x08;
constexpr std::uint64_t kQueryCoveringOrNext = 0x10;

std::atomic<bool> procmap_query_missing{false};

/* @return the mappings, or nothing when the kernel lacks the ioctl. */
std::optional<Result<std::vector<Mapping>>> query_mappings(int fd, Range range, bool clip)
{
	std::vector<Mapping> found;
	char name[512];
	for (std::uint64_t at = range.start; at < range.end;) {
		ProcmapQuery q{};
		q.size = sizeof q;
		q.query_flags = kQueryCoveringOrNext;
		q.query_addr = at;
		q.vma_name_size = sizeof name;
		q.vma_name_addr = reinterpret_cast<std::uint64_t>(name);
		if (::ioctl(fd, kProcmapQuery, &q) != 0) {
			if (errno == ENOENT) /* nothing at or after `at` */
				break;
			if (errno == ENOTTY || errno == EINVAL) {
				procmap_query_missing.store(true, std::memory_order_relaxed);
				return std::nullopt;
			}
			return make_error(errno, "PROCMAP_QUERY on /proc/self/maps failed");
		}
		if (q.vma_start >= range.end)
			break;
		const Range whole{q.vma_start, q.vma_end};
		found.push_back({clip ? Range{std::max(whole.start, range.start), std::min(whole.end, range.end)}
				      : whole,
				 q.vma_name_size ? std::string(name) : std::string(),
				 (q.vma_flags & kQueryShared) != 0, (q.vma_flags & kQueryReadable) != 0,
				 (q.vma_flags & kQueryWritable) != 0, q.inode, q.vma_page_size});
		at = q.vma_end;
	}
	return found;
}

/* The process's /proc/self/maps for PROCMAP_QUERY, kept open: opening it
 * costs more than a query (2.7 us against about 1 us here). Queries on it
 * are serialised (the kernel keeps per-file state for them). A fork child
 * opens its own: the file names the process that opened it. Never
 * destroyed: fork may come during exit. */
struct MapsFile {
	std::mutex mu;
	UniqueFd fd;
	pid_t owner = 0;

	static MapsFile &get()
	{
		static MapsFile *file = new MapsFile;
		return *file;
	}
};

std::optional<Result<std::vector<Mapping>>> query_cached(Range range, bool clip)
{
	MapsFile &file = MapsFile::get();
	/* try_lock: a thread that held it at fork is gone in the child */
	std::unique_lock lock(file.mu, std::try_to_lock);
	if (!lock)
		return std::nullopt;
	if (file.owner != ::getpid()) {
		file.fd.reset(::open("/proc/self/maps", O_RDONLY | O_CLOEXEC));
		file.owner = ::getpid();
	}
	if (!file.fd)
		return std::nullopt;
	return query_mappings(file.fd.get(), range, clip);
}

Result<std::vector<Mapping>> mappings_of(Range range, bool clip)
{
	if (!procmap_query_missing.load(std::memory_order_relaxed))
		if (auto found = query_cached(range, clip))
			return std::move(*found);
	UniqueFd fd(::open("/proc/self/maps", O_RDONLY | O_CLOEXEC));
	if (!fd)
		return make_error(errno, "cannot open /proc/self/maps");
	if (!procmap_query_missing.load(std::memory_order_relaxed))
		if (auto found = query_mappings(fd.get(), range, clip))
			return std::move(*found);
	auto text = read_all(fd.get(), "/proc/self/maps");
	if (!text)
		return std::move(text).error();
	std::vector<Mapping> found;
	for_each_line(*text, [&](std::string_view line) {
		Mapping mapping;
		if (!parse_maps_line(line, mapping) || mapping.range.end <= range.start)
			return true;
		if (mapping.range.start >= range.end)
			return false;
		if (clip)
			mapping.range = {std::max(mapping.range.start, range.start),
					 std::min(mapping.range.end, range.end)};
		found.push_back(std::move(mapping));
		return true;
	});
	return found;
}

} // namespace

Result<std::vector<Mapping>> mappings_in(Range range) { return mappings_of(range, true); }

std::optional<Mapping> mapping_at(std::uint64_t va)
{
	auto found = mappings_of({va, va + 1}, false);
	if (!found || found->empty())
		return std::nullopt;
	return std::move(found->front());
}

std::vector<Range> mapped_writable(std::uint64_t start, std::uint64_t end)
{
	std::vector<Range> parts;
	auto mappings = mappings_in({start, end});
	if (!mappings)
		return parts;
	for (const Mapping &m : *mappings) {
		if (!m.readable || !m.writable)
			continue;
		if (!parts.empty() && parts.back().end == m.range.start)
			parts.back().end = m.range.end;
		else
			parts.push_back(m.range);
	}
	return parts;
}

std::vector<Range> holes_in(Range range, std::span<const Mapping> mappings)
{
	std::vector<Range> holes;
	std::uint64_t at = range.start;
	for (const Mapping &mapping : mappings) {
		if (mapping.range.start > at)
			holes.push_back({at, std::min(mapping.range.start, range.end)});
		at = std::max(at, mapping.range.end);
		if (at >= range.end)
			break;
	}
	if (at < range.end)
		holes.push_back({at, range.end});
	return holes;
}

std::uint64_t kernel_page_size_at(std::uint64_t va)
{
	/* PROCMAP_QUERY knows it; smaps (a few hundred lines a mapping) is the
	 * fallback of older kernels. */
	if (auto here = mappings_in({va, va + 1}); here && !here->empty() &&
	    here->front().page_size)
		return here->front().page_size;
	UniqueFd fd(::open("/proc/self/smaps", O_RDONLY | O_CLOEXEC));
	if (!fd)
		return 0;
	auto text = read_all(fd.get(), "/proc/self/smaps");
	if (!text)
		return 0;
	bool inside = false;
	std::uint64_t size = 0;
	for_each_line(*text, [&](std::string_view line) {
		constexpr std::string_view key = "KernelPageSize:";
		if (Mapping mapping; parse_maps_line(line, mapping)) { /* a mapping's first line */
			inside = mapping.range.start <= va && va < mapping.range.end;
		} else if (inside && line.starts_with(key)) {
			line.remove_prefix(key.size());
			skip_fields(line, 0);
			std::uint64_t kib = 0;
			std::from_chars(line.data(), line.data() + line.size(), kib);
			size = kib * 1024; /* "KernelPageSize:  2048 kB" */
			return false;
		}
		return true;
	});
	return size;
}

} // namespace mrsync::detail
