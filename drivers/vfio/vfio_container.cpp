/* SPDX-License-Identifier: MIT */
#include "vfio_container.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "format.hpp"

namespace mrsync::vfio {

static_assert(Container::kType1v2 == VFIO_TYPE1v2_IOMMU);

using detail::errno_text;
using detail::fmt;

Result<std::string> group_path(const std::string &device)
{
	if (device.rfind("/dev/vfio/", 0) == 0)
		return device;
	const std::string link = "/sys/bus/pci/devices/" + device + "/iommu_group";
	char target[PATH_MAX];
	const ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
	if (n < 0)
		return make_error(errno == ENOENT ? ENODEV : errno,
				  fmt("vfio: device '%s': no %s (%s): not a PCI address, or no "
				      "IOMMU (intel_iommu=on?)", device.c_str(), link.c_str(),
				      errno_text(errno).c_str()));
	target[n] = '\0';
	const char *slash = std::strrchr(target, '/');
	return std::string("/dev/vfio/") + (slash ? slash + 1 : target);
}

Result<Container> Container::open(const std::string &device, int iommu_type)
{
	auto path = group_path(device);
	if (!path)
		return std::move(path).error();
	Container c;
	c.container_.reset(::open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC));
	if (!c.container_)
		return make_error(ENODEV, fmt("vfio: /dev/vfio/vfio: %s (modprobe vfio-pci)",
					      errno_text(errno).c_str()));
	c.group_.reset(::open(path->c_str(), O_RDWR | O_CLOEXEC));
	if (!c.group_)
		return make_error(errno == ENOENT ? ENODEV : errno,
				  fmt("vfio: device '%s': group %s: %s (bound to vfio-pci? "
				      "opened elsewhere?)", device.c_str(), path->c_str(),
				      errno_text(errno).c_str()));
	vfio_group_status status{.argsz = sizeof status};
	if (ioctl(c.group_.get(), VFIO_GROUP_GET_STATUS, &status) ||
	    !(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return make_error(EBUSY, fmt("vfio: group %s is not viable: bind every device "
					     "of the group to vfio-pci", path->c_str()));
	int fd = c.container_.get();
	if (ioctl(c.group_.get(), VFIO_GROUP_SET_CONTAINER, &fd))
		return make_error(errno, fmt("vfio: VFIO_GROUP_SET_CONTAINER %s: %s", path->c_str(),
					     errno_text(errno).c_str()));
	if (ioctl(fd, VFIO_SET_IOMMU, iommu_type))
		return make_error(errno, fmt("vfio: VFIO_SET_IOMMU %d: %s (no interrupt "
					     "remapping? see docs/vfio.md)", iommu_type,
					     errno_text(errno).c_str()));
	return c;
}

Result<Container> Container::adopt(int fd)
{
	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return make_error(EBADF, fmt("vfio: container_fd %d is not an open file", fd));
	Container c;
	c.adopted_ = fd;
	/* A container whose IOMMU is not set answers GET_INFO with EINVAL. */
	if (auto info = c.info(); !info)
		return make_error(EINVAL, fmt("vfio: container_fd %d is not a VFIO container "
					      "with a type1 IOMMU set: %s", fd,
					      info.error().message.c_str()));
	return c;
}

Result<int> Container::device_fd(const std::string &pci_address) const
{
	const int fd = ioctl(group_.get(), VFIO_GROUP_GET_DEVICE_FD, pci_address.c_str());
	if (fd < 0)
		return make_error(errno, fmt("vfio: VFIO_GROUP_GET_DEVICE_FD %s: %s",
					     pci_address.c_str(), errno_text(errno).c_str()));
	return fd;
}

Result<IommuInfo> Container::info() const
{
	/* First call learns the size the capability chain needs. */
	std::vector<std::uint64_t> buf(sizeof(vfio_iommu_type1_info) / 8 + 1);
	auto *head = reinterpret_cast<vfio_iommu_type1_info *>(buf.data());
	head->argsz = sizeof(vfio_iommu_type1_info);
	if (ioctl(fd(), VFIO_IOMMU_GET_INFO, head))
		return make_error(errno, fmt("vfio: VFIO_IOMMU_GET_INFO: %s",
					     errno_text(errno).c_str()));
	if (head->argsz > sizeof(vfio_iommu_type1_info)) {
		const std::uint32_t need = head->argsz;
		buf.assign(need / 8 + 1, 0);
		head = reinterpret_cast<vfio_iommu_type1_info *>(buf.data());
		head->argsz = need;
		if (ioctl(fd(), VFIO_IOMMU_GET_INFO, head))
			return make_error(errno, fmt("vfio: VFIO_IOMMU_GET_INFO: %s",
						     errno_text(errno).c_str()));
	}
	IommuInfo out;
	out.pgsizes = head->iova_pgsizes;
	if (!(head->flags & VFIO_IOMMU_INFO_CAPS))
		return out;
	const auto *base = reinterpret_cast<const char *>(head);
	for (std::uint32_t off = head->cap_offset; off && off + sizeof(vfio_info_cap_header) <= head->argsz;) {
		const auto *cap = reinterpret_cast<const vfio_info_cap_header *>(base + off);
		if (cap->id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
			const auto *r = reinterpret_cast<const vfio_iommu_type1_info_cap_iova_range *>(cap);
			for (std::uint32_t i = 0; i < r->nr_iovas; ++i)
				out.iova_ranges.push_back({r->iova_ranges[i].start, r->iova_ranges[i].end});
		} else if (cap->id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
			out.dma_avail = reinterpret_cast<const vfio_iommu_type1_info_dma_avail *>(cap)->avail;
		}
		if (cap->next <= off)
			break; /* the chain only moves forward */
		off = cap->next;
	}
	return out;
}

Status Container::map(std::uint64_t vaddr, std::uint64_t iova, std::uint64_t size) const
{
	vfio_iommu_type1_dma_map m{.argsz = sizeof m,
				   .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
				   .vaddr = vaddr, .iova = iova, .size = size};
	if (ioctl(fd(), VFIO_IOMMU_MAP_DMA, &m))
		return make_error(errno, fmt("vfio: MAP_DMA va 0x%" PRIx64 " -> iova 0x%" PRIx64
					     " +0x%" PRIx64 ": %s", vaddr, iova, size,
					     errno_text(errno).c_str()));
	return {};
}

Result<std::uint64_t> Container::unmap(std::uint64_t iova, std::uint64_t size) const
{
	vfio_iommu_type1_dma_unmap u{.argsz = sizeof u, .flags = 0, .iova = iova, .size = size};
	if (ioctl(fd(), VFIO_IOMMU_UNMAP_DMA, &u))
		return make_error(errno, fmt("vfio: UNMAP_DMA iova 0x%" PRIx64 " +0x%" PRIx64 ": %s",
					     iova, size, errno_text(errno).c_str()));
	return std::uint64_t(u.size);
}

} // namespace mrsync::vfio
