/* SPDX-License-Identifier: MIT */
/* The vfio driver (include/mrsync/vfio.h, docs/vfio.md): the device's
 * translation table is the IOMMU's. A registration owns an IOVA range for
 * life (its key); each valid entry is one VFIO_IOMMU_MAP_DMA at the IOVA of
 * its offset, so any entry can be unmapped alone (type1v2 refuses to unmap
 * part of a mapping). map() diffs the old translation against the new one
 * and issues only the ioctls of the entries whose validity changed. */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <bit>
#include <cerrno>
#include <cinttypes>
#include <map>
#include <unordered_map>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/log.hpp>
#include <mrsync/vfio.h>

#include "format.hpp"
#include "iova_space.hpp"
#include "unique_fd.hpp"
#include "vfio_container.hpp"
#include "vfio_pvt.hpp"

namespace mrsync::vfio {
namespace {

using detail::errno_text;
using detail::fmt;

std::uint64_t iova_of(Keys k) { return std::uint64_t(k.lkey) | (std::uint64_t(k.rkey) << 32); }
Keys keys_of(std::uint64_t iova) { return {std::uint32_t(iova), std::uint32_t(iova >> 32)}; }

struct Registration {
	std::uint64_t va = 0, len = 0;
	std::vector<Extent> translation; /* as the IOMMU maps it now */
};

class VfioDriver final : public Driver {
public:
	VfioDriver(Container container, std::uint64_t unit, IovaSpace space)
		: container_(std::move(container)), unit_(unit), space_(std::move(space))
	{
	}

	~VfioDriver() override
	{
		if (abandoned_)
			return; /* the parent's mappings: not ours to touch */
		for (const auto &[iova, reg] : regs_)
			(void)container_.unmap(iova, round_up(reg.len));
	}

	std::string_view name() const noexcept override { return "vfio"; }

	DriverCaps caps() const noexcept override
	{
		return DriverCaps{
			.entry_granularity = std::uint64_t(sysconf(_SC_PAGESIZE)),
			/* a backing is bookkeeping (see pin()), so any size */
			.max_backing_bytes = 1ull << 40,
			.max_backings = UINT32_MAX - 1,
			.keys_survive_map = true,
			.holes_ok = true, /* an unmapped entry faults alone */
		};
	}

	/* The pin proper is the MAP_DMA, which needs the registration's IOVA,
	 * so create()/map() issue it: under the same context lock and after
	 * the same prepare_pin() as this call, so the pin guard covers it.
	 * Here the range is faulted in for writing, as MAP_DMA's pin will do
	 * (MADV_POPULATE_WRITE), so that what MAP_DMA could not pin --
	 * unmapped, PROT_NONE or read-only memory, a memfd hole past EOF --
	 * comes back as EFAULT and the core treats it as a hole. */
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override
	{
		if (!can_populate_) { /* before Linux 5.14: is it mapped at all? */
			if (mapped(va, len))
				return next_backing_++;
		} else if (madvise(reinterpret_cast<void *>(va), len, kPopulateWrite) == 0) {
			return next_backing_++;
		} else if (errno == EINTR) {
			return make_error(EAGAIN, "vfio: pin interrupted");
		}
		/* EINVAL is PROT_NONE or read-only here: the kernel knows the
		 * advice (probed), it refuses the memory. */
		return make_error(EFAULT, fmt("vfio: pin [0x%" PRIx64 ", +0x%" PRIx64 "): not "
					      "mapped writable (%s)", va, len,
					      errno_text(errno).c_str()));
	}

	/* The kernel unpinned the pages when map() or destroy() unmapped
	 * their last entry, after the IOTLB flush. */
	void unpin(BackingId) noexcept override {}

	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t,
			    std::span<const Extent> translation) override
	{
		if (va % unit_ || len % unit_)
			return make_error(EINVAL, fmt("vfio: registration [0x%" PRIx64 ", +0x%" PRIx64
						      ") is not aligned to the entry size 0x%" PRIx64,
						      va, len, unit_));
		auto iova = space_.alloc(len, unit_);
		if (!iova)
			return std::move(iova).error();
		const Extent none{0, len, kNoBacking};
		Registration reg{va, len, {none}};
		if (auto ok = apply(*iova, reg, translation); !ok) {
			space_.free(*iova, len);
			return std::move(ok).error();
		}
		regs_.emplace(*iova, std::move(reg));
		return keys_of(*iova);
	}

	Result<Keys> map(Keys keys, std::span<const Extent> translation) override
	{
		auto it = regs_.find(iova_of(keys));
		if (it == regs_.end())
			return make_error(EINVAL, "vfio map: unknown keys");
		if (auto ok = apply(it->first, it->second, translation); !ok)
			return std::move(ok).error();
		return keys;
	}

	void destroy(Keys keys) noexcept override
	{
		auto it = regs_.find(iova_of(keys));
		if (it == regs_.end())
			return;
		/* One ioctl for every entry: each lies wholly inside. */
		if (auto ok = container_.unmap(it->first, it->second.len); !ok)
			MRSYNC_LOG(warning, "vfio", "%s", ok.error().message.c_str());
		space_.free(it->first, it->second.len);
		regs_.erase(it);
	}

	/* Every UNMAP_DMA returned after the IOMMU's IOTLB invalidation, so no
	 * DMA issued before it can still reach a replaced entry: the fence was
	 * each unmap, there is nothing left to wait for. */
	Status fence() override { return {}; }

	void abandon() noexcept override { abandoned_ = true; }

private:
	static constexpr int kPopulateWrite = 23; /* MADV_POPULATE_WRITE, Linux 5.14 */

	/* Whether the kernel knows MADV_POPULATE_WRITE: on one page of our own. */
	static bool probe_populate()
	{
		void *p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED)
			return false;
		const bool ok = madvise(p, 4096, kPopulateWrite) == 0;
		munmap(p, 4096);
		return ok;
	}

	static bool mapped(std::uint64_t va, std::uint64_t len)
	{
		unsigned char vec[64];
		const std::uint64_t page = std::uint64_t(sysconf(_SC_PAGESIZE));
		for (std::uint64_t at = va; at < va + len;) {
			const std::uint64_t n = std::min(va + len - at, sizeof vec * page);
			if (mincore(reinterpret_cast<void *>(at), n, vec))
				return false;
			at += n;
		}
		return true;
	}

	std::uint64_t round_up(std::uint64_t n) const { return (n + unit_ - 1) / unit_ * unit_; }

	/* Unmaps what went invalid (one ioctl per run of entries), then maps
	 * what became valid (one ioctl per entry). A map that fails (a page
	 * the application unmapped meanwhile: EFAULT) unmaps what this call
	 * mapped: the IOMMU then holds the old translation less what went
	 * invalid, which refuses DMA where it should, and reg.translation
	 * says so, so that a later call diffs against what is really mapped. */
	Status apply(std::uint64_t iova, Registration &reg, std::span<const Extent> translation)
	{
		const auto changes = validity_changes(reg.translation, translation);
		std::vector<Change> maps;
		for (const Change &c : changes) {
			if (c.valid) {
				maps.push_back(c);
				continue;
			}
			auto gone = container_.unmap(iova + c.offset, c.length);
			if (!gone || *gone != c.length) {
				/* Not ours any more (another user of an adopted
				 * container unmapped it): say so, then treat the
				 * range as unmapped, which it is now. */
				MRSYNC_LOG(warning, "vfio", "UNMAP_DMA iova 0x%" PRIx64 " +0x%" PRIx64
					   ": %s", iova + c.offset, c.length,
					   gone ? "fewer bytes than mapped" :
						  gone.error().message.c_str());
			}
		}
		for (std::size_t i = 0; i < maps.size(); ++i) {
			const Change &c = maps[i];
			Status ok;
			std::uint64_t at = c.offset;
			if (c.offset % unit_ || c.length % unit_)
				ok = make_error(EINVAL, "vfio: extent not aligned to the entry size");
			for (; ok && at < c.offset + c.length; at += unit_)
				if (auto m = container_.map(reg.va + at, iova + at, unit_); !m)
					ok = std::move(m).error();
			if (!ok) {
				/* undo: [c.offset, at) of this one, all of the earlier ones */
				(void)container_.unmap(iova + c.offset, at - c.offset);
				for (std::size_t j = 0; j < i; ++j)
					(void)container_.unmap(iova + maps[j].offset, maps[j].length);
				reg.translation = invalidated(translation, maps);
				Error error = std::move(ok).error();
				if (error.code == ENOSPC)
					error.message += " (the container's dma_entry_limit is reached: "
							 "a larger entry_size maps fewer entries)";
				return error;
			}
		}
		reg.translation.assign(translation.begin(), translation.end());
		return {};
	}

	Container container_;
	const std::uint64_t unit_;
	IovaSpace space_;
	std::map<std::uint64_t, Registration> regs_; /* by IOVA */
	BackingId next_backing_ = 0;
	const bool can_populate_ = probe_populate();
	bool abandoned_ = false;
};

bool available(std::string &why)
{
	detail::UniqueFd fd(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
	if (!fd) {
		why = "/dev/vfio/vfio: " + errno_text(errno) + " (modprobe vfio-pci)";
		return false;
	}
	if (ioctl(fd.get(), VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
	    ioctl(fd.get(), VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
		why = "/dev/vfio/vfio has no type1v2 IOMMU";
		return false;
	}
	return true;
}

/* The IOVA space: the container's usable ranges, cut to the window the
 * options allow. No ranges reported (an older kernel): the window alone. */
IovaSpace iova_space(const IommuInfo &info, const Options &o)
{
	IovaSpace space;
	if (info.iova_ranges.empty())
		space.add(o.iova_base, o.iova_limit);
	for (const auto &r : info.iova_ranges) {
		const std::uint64_t end = r.end == UINT64_MAX ? UINT64_MAX : r.end + 1;
		space.add(std::max(r.start, o.iova_base), std::min(end, o.iova_limit));
	}
	return space;
}

Result<std::unique_ptr<Driver>> make(const DriverConfig &config)
{
	auto options = parse_params(config.arg);
	if (!options)
		return std::move(options).error();
	auto container = options->adopt ? Container::adopt(options->container_fd)
					: Container::open(options->device);
	if (!container)
		return std::move(container).error();
	auto info = container->info();
	if (!info)
		return std::move(info).error();
	/* The smallest IOMMU page must divide an entry. */
	const std::uint64_t min_page = info->pgsizes & -info->pgsizes;
	if (!min_page || config.entry_size % min_page)
		return make_error(EINVAL, fmt("vfio: entry_size %" PRIu64 " is not a multiple of "
					      "the IOMMU page size %" PRIu64, config.entry_size,
					      min_page));
	IovaSpace space = iova_space(*info, *options);
	if (!space.available())
		return make_error(EINVAL, fmt("vfio: no usable IOVA between 0x%" PRIx64 " and "
					      "0x%" PRIx64 " (the IOMMU's iova ranges)",
					      options->iova_base, options->iova_limit));
	MRSYNC_LOG(info, "vfio", "container %s: %zu iova ranges, dma_avail %" PRId64
		   ", 0x%" PRIx64 " bytes of IOVA usable, entry 0x%" PRIx64,
		   options->adopt ? "adopted" : options->device.c_str(), info->iova_ranges.size(),
		   info->dma_avail, space.available(), config.entry_size);
	return std::unique_ptr<Driver>(
		new VfioDriver(std::move(*container), config.entry_size, std::move(space)));
}

} // namespace

MRSYNC_REGISTER_DRIVER((DriverFactory{"vfio", available, make}))

} // namespace mrsync::vfio
