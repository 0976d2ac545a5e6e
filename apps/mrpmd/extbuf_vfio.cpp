/* SPDX-License-Identifier: MIT */
/* The external-buffer area of --extbuf: its memory, its translation (mrsync's
 * vfio driver in DPDK's container, or one rte_dev_dma_map) and its churn. */
/* rte_dev_dma_map/unmap, the negative control's by-hand mapping, are still
 * experimental in DPDK 22.11 */
#define ALLOW_EXPERIMENTAL_API 1
#include "extbuf_vfio.hpp"

#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/vfio.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_memory.h>

#include <mrsync/vfio.h>


namespace mrpmd {
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kSlotsPerChunk = ExtbufArea::kChunk / ExtbufArea::kSlot;
/* One chunk every 5 ms: 200 replacements a second, each resynced before the
 * next burst. (Every 2 ms with one-page entries the guest's lcore spent
 * almost all its time in MAP_DMA/UNMAP_DMA under TCG: 64 packets in 10 s.) */
constexpr auto kChurnPeriod = std::chrono::milliseconds(5);
/* Translation entries of 64 KiB: a replaced 256 KiB chunk is 4 unmaps and 4
 * maps instead of 64 + 64, and the 16 MiB area 256 of the container's
 * mappings (docs/vfio.md: entry_size). */
constexpr std::uint64_t kEntrySize = 64u << 10;
static_assert(ExtbufArea::kChunk % kEntrySize == 0);
/* How long the churn waits for a chunk's buffers to come back from the NIC
 * before it gives that chunk a miss (traffic stopped, ring full). */
constexpr auto kDrainWait = std::chrono::milliseconds(200);

/* The IOVA window mrsync (or the negative control) hands out, beside DPDK's
 * own mappings: in IOVA-as-VA mode DPDK maps its memory at its virtual
 * addresses (from 4 GiB up), so [1 GiB, 2 GiB) is free; in PA mode it maps
 * physical addresses, so go above any RAM the guest has (and below the
 * 39-bit address width of QEMU's intel-iommu). */
struct Window {
	std::uint64_t base, limit;
};
Window choose_iova_window()
{
	if (rte_eal_iova_mode() == RTE_IOVA_VA)
		return {1ull << 30, 2ull << 30};
	return {1ull << 38, (1ull << 38) + (1ull << 30)};
}

/* DPDK 22.11's rte_vfio_get_container_fd() opens a *new*, empty container in
 * a primary process (later releases return the default one), and the EAL's
 * default container fd is not exported. It is this process's /dev/vfio/vfio
 * whose IOMMU is set: VFIO_IOMMU_GET_INFO succeeds only on a container that
 * holds a group. More than one such container is ambiguous: refuse. */
int dpdk_default_container_fd()
{
	DIR *dir = opendir("/proc/self/fd");
	if (!dir)
		return -errno;
	int found = -ENOENT;
	while (dirent *e = readdir(dir)) {
		char path[300], target[64];
		snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
		const ssize_t n = readlink(path, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (std::strcmp(target, "/dev/vfio/vfio") != 0)
			continue;
		const int fd = std::atoi(e->d_name);
		vfio_iommu_type1_info info{};
		info.argsz = sizeof info;
		if (ioctl(fd, VFIO_IOMMU_GET_INFO, &info) != 0)
			continue;
		if (found >= 0) {
			found = -EEXIST;
			break;
		}
		found = fd;
	}
	closedir(dir);
	return found;
}

} // namespace

ExtbufMode extbuf_mode(const std::string &name)
{
	if (name == "vfio")
		return ExtbufMode::vfio;
	return name == "dma-map-once" ? ExtbufMode::dma_map_once : ExtbufMode::off;
}

const char *extbuf_mode_name(ExtbufMode mode)
{
	switch (mode) {
	case ExtbufMode::vfio: return "vfio";
	case ExtbufMode::dma_map_once: return "dma-map-once";
	case ExtbufMode::off: break;
	}
	return "off";
}

ExtbufArea::ExtbufArea(ExtbufMode mode) : mode_(mode)
{
	shinfo_.resize(kSlots);
	busy_ = std::make_unique<std::atomic<bool>[]>(kSlots);
}

ExtbufArea::~ExtbufArea()
{
	stop_churn();
	held_.reset();
	ctx_.reset(); /* unmaps every IOVA it mapped */
	if (mapped_dev_ && rte_dev_dma_unmap(mapped_dev_, base_, iova_base_, kBytes) != 0)
		fprintf(stderr, "mrpmd: rte_dev_dma_unmap: %s\n", rte_strerror(rte_errno));
	if (extmem_)
		rte_extmem_unregister(base_, kBytes);
	if (base_)
		munmap(base_, kBytes);
}

bool ExtbufArea::init()
{
	/* Aligned to a chunk, so a replaced chunk covers whole translation
	 * entries: map one chunk more, then trim both ends. */
	void *p = mmap(nullptr, kBytes + kChunk, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "mrpmd: --extbuf: cannot map %zu KiB: %s\n", kBytes >> 10,
			strerror(errno));
		return false;
	}
	const auto raw = reinterpret_cast<std::uintptr_t>(p);
	const std::uintptr_t head = (kChunk - raw % kChunk) % kChunk;
	if (head)
		munmap(p, head);
	munmap(reinterpret_cast<void *>(raw + head + kBytes), kChunk - head);
	base_ = reinterpret_cast<std::uint8_t *>(raw + head);
	std::memset(base_, 0xa5, kBytes);
	return mode_ == ExtbufMode::vfio ? init_vfio() : init_dma_map_once();
}

bool ExtbufArea::init_vfio()
{
	const int container = dpdk_default_container_fd();
	if (container < 0) {
		fprintf(stderr, "mrpmd: --extbuf=vfio: DPDK's VFIO container: %s (are the ports "
				"bound to vfio-pci?)\n",
			container == -EEXIST ? "more than one container with an IOMMU"
					     : strerror(-container));
		return false;
	}
	const Window w = choose_iova_window();
	mrsync_vfio_params vp = MRSYNC_VFIO_PARAMS_INIT;
	vp.flags = MRSYNC_VFIO_F_ADOPT_CONTAINER;
	vp.container_fd = container;
	vp.dma_mask_bits = 39; /* QEMU intel-iommu's default address width */
	vp.iova_base = w.base;
	vp.iova_limit = w.limit;
	mrsync_params p = mrsync::Context::default_params();
	p.driver = "vfio";
	p.driver_arg = &vp;
	p.entry_size = kEntrySize;
	auto ctx = mrsync::Context::create(p);
	if (!ctx) {
		fprintf(stderr, "mrpmd: --extbuf=vfio: %s\n", ctx.error().message.c_str());
		return false;
	}
	ctx_ = std::make_unique<mrsync::Context>(std::move(*ctx));
	/* The first lookup maps the whole area; a burst's lookup then hits. */
	if (!translate())
		return false;
	printf("mrpmd: --extbuf=vfio: %zu KiB of anonymous memory at IOVA 0x%" PRIx64
	       " through mrsync's vfio driver in DPDK's container (fd %d)\n",
	       kBytes >> 10, iova_base_, container);
	return true;
}

bool ExtbufArea::init_dma_map_once()
{
	rte_eth_dev_info info{};
	if (rte_eth_dev_info_get(0, &info) != 0 || !info.device) {
		fprintf(stderr, "mrpmd: --extbuf=dma-map-once: port 0 has no device\n");
		return false;
	}
	if (rte_extmem_register(base_, kBytes, nullptr, 0, kPage) != 0) {
		fprintf(stderr, "mrpmd: rte_extmem_register: %s\n", rte_strerror(rte_errno));
		return false;
	}
	extmem_ = true;
	/* One mapping in the container every port shares (the default one):
	 * pinned now, whatever happens to the memory later. */
	iova_base_ = choose_iova_window().base;
	if (rte_dev_dma_map(info.device, base_, iova_base_, kBytes) != 0) {
		fprintf(stderr, "mrpmd: rte_dev_dma_map: %s\n", rte_strerror(rte_errno));
		return false;
	}
	mapped_dev_ = info.device;
	printf("mrpmd: --extbuf=dma-map-once: %zu KiB of anonymous memory at IOVA 0x%" PRIx64
	       ", mapped once by rte_dev_dma_map (never resynced)\n",
	       kBytes >> 10, iova_base_);
	return true;
}

std::optional<std::uint64_t> ExtbufArea::translate()
{
	if (mode_ != ExtbufMode::vfio)
		return iova_base_;
	/* Looked up after the burst's slots were taken: their chunks cannot be
	 * replaced any more, so what this lookup maps is what the NIC reads. */
	auto reg = ctx_->get(base_, kBytes, MRSYNC_ACCESS_LOCAL_WRITE);
	if (!reg) {
		++counters_.lookup_errors;
		fprintf(stderr, "mrpmd: --extbuf=vfio: lookup: %s\n", reg.error().message.c_str());
		return std::nullopt;
	}
	/* Held until the next burst's lookup: the NIC reads after tx_burst returns. */
	held_ = std::move(*reg);
	iova_base_ = mrsync_vfio_iova(&held_.raw(), base_);
	return iova_base_;
}

int ExtbufArea::take()
{
	for (std::size_t tries = 0; tries < kSlots; ++tries) {
		const std::size_t s = cursor_;
		cursor_ = (cursor_ + 1) % kSlots;
		if (busy_[s].load(std::memory_order_acquire))
			continue;
		Chunk &c = chunks_[s / kSlotsPerChunk];
		/* In flight first, then the published check (both seq_cst): the
		 * churn unpublishes, then reads in_flight, so one of us sees the
		 * other and a chunk is never replaced under a taken slot. */
		c.in_flight.fetch_add(1);
		if (!c.published.load()) {
			c.in_flight.fetch_sub(1);
			cursor_ = (s / kSlotsPerChunk + 1) * kSlotsPerChunk % kSlots;
			continue;
		}
		busy_[s].store(true, std::memory_order_relaxed);
		return int(s);
	}
	++counters_.no_slot;
	return -1;
}

void ExtbufArea::release(int slot) noexcept
{
	busy_[slot].store(false, std::memory_order_release);
	chunks_[std::size_t(slot) / kSlotsPerChunk].in_flight.fetch_sub(1, std::memory_order_release);
}

void ExtbufArea::give_back(int slot) noexcept { release(slot); }

void ExtbufArea::on_free(void *addr, void *opaque)
{
	auto *self = static_cast<ExtbufArea *>(opaque);
	self->release(int((static_cast<std::uint8_t *>(addr) - self->base_) / kSlot));
}

void ExtbufArea::attach(rte_mbuf *m, int slot, std::uint64_t iova_base) noexcept
{
	/* The shared info lives outside the area: the churn replaces the area's
	 * pages, never this bookkeeping. */
	rte_mbuf_ext_shared_info &sh = shinfo_[std::size_t(slot)];
	sh.free_cb = on_free;
	sh.fcb_opaque = this;
	rte_mbuf_ext_refcnt_set(&sh, 1);
	rte_pktmbuf_attach_extbuf(m, slot_va(slot), iova_base + std::size_t(slot) * kSlot,
				  std::uint16_t(kSlot), &sh);
	m->data_off = 0;
}

void ExtbufArea::start_churn()
{
	if (!churn_.joinable())
		churn_ = std::thread([this] { churn_loop(); });
}

void ExtbufArea::stop_churn()
{
	stop_.store(true);
	if (churn_.joinable())
		churn_.join();
}

void ExtbufArea::churn_loop()
{
	for (std::size_t k = 0; !stop_.load(); k = (k + 1) % kChunks) {
		if (!replace_chunk(k))
			++counters_.remap_skips;
		std::this_thread::sleep_for(kChurnPeriod);
	}
}

/* Unpublish, wait until the NIC gave back every buffer of the chunk, put
 * fresh pages there (mmap MAP_FIXED: same address, new memory), refill,
 * publish again. */
bool ExtbufArea::replace_chunk(std::size_t k)
{
	Chunk &c = chunks_[k];
	c.published.store(false);
	const auto deadline = std::chrono::steady_clock::now() + kDrainWait;
	while (c.in_flight.load() != 0) {
		if (stop_.load() || std::chrono::steady_clock::now() > deadline) {
			c.published.store(true);
			return false;
		}
		std::this_thread::sleep_for(std::chrono::microseconds(50));
	}
	std::uint8_t *at = base_ + k * kChunk;
	void *p = mmap(at, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		       -1, 0);
	if (p == MAP_FAILED) {
		/* MAP_FIXED failing leaves the old mapping; nothing was lost */
		fprintf(stderr, "mrpmd: --churn: mmap MAP_FIXED: %s\n", strerror(errno));
		c.published.store(true);
		return false;
	}
	std::memset(at, 0x5a, kChunk);
	++counters_.remaps;
	c.published.store(true);
	return true;
}

} // namespace mrpmd
