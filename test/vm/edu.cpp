/* SPDX-License-Identifier: MIT */
#include "edu.hpp"

#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "format.hpp"

namespace mrsync::test {
namespace {

constexpr std::size_t kRegId = 0x00, kRegSrc = 0x80, kRegDst = 0x88, kRegCount = 0x90,
		      kRegCmd = 0x98;
constexpr std::uint64_t kDevBuffer = 0x40000;
constexpr std::uint64_t kCmdStart = 1, kCmdToRam = 2;

std::string read_line(const std::string &path)
{
	std::ifstream in(path);
	std::string s;
	std::getline(in, s);
	return s;
}

Error sys_error(const char *what)
{
	return make_error(errno, detail::fmt("edu: %s: %s", what, std::strerror(errno)));
}

} // namespace

std::optional<std::string> find_edu()
{
	DIR *dir = opendir("/sys/bus/pci/devices");
	if (!dir)
		return std::nullopt;
	std::optional<std::string> found;
	while (dirent *e = readdir(dir)) {
		const std::string base = std::string("/sys/bus/pci/devices/") + e->d_name;
		if (read_line(base + "/vendor") == "0x1234" && read_line(base + "/device") == "0x11e8") {
			found = e->d_name;
			break;
		}
	}
	closedir(dir);
	return found;
}

std::size_t dmar_faults()
{
	const int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, nullptr, 0);
	if (size <= 0)
		return 0;
	std::vector<char> buf(std::size_t(size) + 1);
	const int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf.data(), size);
	if (n <= 0)
		return 0;
	std::size_t count = 0;
	std::string_view log(buf.data(), std::size_t(n));
	for (std::size_t at = 0; (at = log.find("DMAR: [DMA ", at)) != log.npos; ++at)
		++count;
	return count;
}

bool dmar_fault_since(std::size_t before)
{
	for (int i = 0; i < 200; ++i) {
		if (dmar_faults() > before)
			return true;
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	}
	return false;
}

Result<Edu> Edu::open(int iommu_type)
{
	auto addr = find_edu();
	if (!addr)
		return make_error(ENODEV, "edu: no device 1234:11e8 (QEMU -device edu)");
	auto container = vfio::Container::open(*addr, iommu_type);
	if (!container)
		return std::move(container).error();
	Edu edu;
	edu.container_ = std::move(*container);
	auto dev = edu.container_.device_fd(*addr);
	if (!dev)
		return std::move(dev).error();
	edu.device_.reset(*dev);
	vfio_region_info bar{.argsz = sizeof bar, .index = VFIO_PCI_BAR0_REGION_INDEX};
	if (ioctl(edu.device_.get(), VFIO_DEVICE_GET_REGION_INFO, &bar))
		return sys_error("BAR0 region info");
	edu.bar0_ = detail::UniqueMmap(mmap(nullptr, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED,
					    edu.device_.get(), off_t(bar.offset)),
				       bar.size);
	if (!edu.bar0_)
		return sys_error("mmap BAR0");
	vfio_region_info cfg{.argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
	if (ioctl(edu.device_.get(), VFIO_DEVICE_GET_REGION_INFO, &cfg))
		return sys_error("config region info");
	std::uint16_t cmd = 0;
	if (pread(edu.device_.get(), &cmd, sizeof cmd, off_t(cfg.offset + PCI_COMMAND)) != 2)
		return sys_error("read PCI_COMMAND");
	cmd |= PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
	if (pwrite(edu.device_.get(), &cmd, sizeof cmd, off_t(cfg.offset + PCI_COMMAND)) != 2)
		return sys_error("write PCI_COMMAND");
	edu.staging_ = detail::UniqueMmap(mmap(nullptr, 4096, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0),
					  4096);
	if (!edu.staging_)
		return sys_error("mmap staging");
	if (auto ok = edu.container_.map(reinterpret_cast<std::uint64_t>(edu.staging_.get()),
					 kStagingIova, 4096); !ok)
		return std::move(ok).error();
	if (edu.id() != 0x010000ed)
		return make_error(ENODEV, detail::fmt("edu: id register reads 0x%08x", edu.id()));
	return edu;
}

volatile std::uint64_t *Edu::reg64(std::size_t off) const
{
	return reinterpret_cast<volatile std::uint64_t *>(bar0_.data() + off);
}

std::uint32_t Edu::id() const
{
	return *reinterpret_cast<volatile std::uint32_t *>(bar0_.data() + kRegId);
}

void Edu::start(std::uint64_t src, std::uint64_t dst, std::size_t len, bool to_ram)
{
	*reg64(kRegSrc) = src;
	*reg64(kRegDst) = dst;
	*reg64(kRegCount) = len;
	*reg64(kRegCmd) = kCmdStart | (to_ram ? kCmdToRam : 0);
}

Status Edu::wait()
{
	/* ~100 ms of virtual time a DMA; give up after 30 s. */
	for (int i = 0; i < 30000; ++i) {
		if (!(*reg64(kRegCmd) & kCmdStart))
			return {};
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	return make_error(ETIMEDOUT, "edu: DMA did not complete in 30 s");
}

Status Edu::load(std::span<const std::byte> bytes)
{
	if (bytes.size() > kMaxDma)
		return make_error(EINVAL, "edu: a DMA moves at most 4095 bytes");
	std::memcpy(staging_.get(), bytes.data(), bytes.size());
	start(kStagingIova, kDevBuffer, bytes.size(), false);
	return wait();
}

void Edu::start_to_ram(std::uint64_t iova, std::size_t len)
{
	start(kDevBuffer, iova, len, true);
}

Status Edu::write(std::uint64_t iova, std::span<const std::byte> bytes)
{
	if (auto ok = load(bytes); !ok)
		return ok;
	start_to_ram(iova, bytes.size());
	return wait();
}

int open_edu_once(const char *argv0, Edu *&edu, int iommu_type)
{
	static Result<Edu> opened = Edu::open(iommu_type);
	const bool guest = std::getenv("MRSYNC_VM_GUEST");
	if (!opened) {
		std::fprintf(stderr, "%s: %s: %s\n", argv0, guest ? "failed" : "skipped",
			     opened.error().message.c_str());
		return guest ? 1 : 77;
	}
	edu = &*opened;
	return -1;
}

std::byte *map_pages(std::size_t n, void *at)
{
	void *p = mmap(at, n * 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
	if (p == MAP_FAILED) {
		std::perror("map_pages: mmap");
		std::abort();
	}
	std::memset(p, 0, n * 4096); /* populated */
	return static_cast<std::byte *>(p);
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed)
{
	std::vector<std::byte> v(n);
	for (std::size_t i = 0; i < n; ++i)
		v[i] = std::byte(0x11 + (i * 7 + seed * 13) % 0xe0);
	return v;
}

bool holds(const std::byte *at, std::span<const std::byte> bytes)
{
	return std::memcmp(at, bytes.data(), bytes.size()) == 0;
}

} // namespace mrsync::test
