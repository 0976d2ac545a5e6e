/* SPDX-License-Identifier: MIT */
/**
 * @file
 * A polled user-space driver for QEMU's `edu` PCI device (vendor 1234,
 * device 11e8) through VFIO, for the vfio driver's guest tests: BAR0 mmap'ed,
 * bus mastering on, the DMA engine driven by its registers and its completion
 * polled (no interrupts). The guest must run behind `-device intel-iommu`
 * with edu bound to vfio-pci (test/vm/guest.sh does that).
 *
 * The device copies at most 4095 bytes per DMA between its 4 KiB buffer
 * (device address 0x40000) and a 28-bit IOVA, about 100 ms of virtual time
 * each; a DMA the IOMMU refuses completes all the same, and the DMAR fault
 * shows in the kernel log (dmar_faults() counts them).
 *
 * To write bytes into memory the driver first DMAs them from its own
 * staging page (mapped straight into the container at kStagingIova, outside
 * mrsync's IOVA window) into the device buffer, then from there to the
 * target IOVA: two DMAs per write.
 *
 * Thread safety: one thread at a time (callers serialise).
 */
#ifndef MRSYNC_TEST_VM_EDU_HPP
#define MRSYNC_TEST_VM_EDU_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <mrsync/mrsync.hpp>
#include <mrsync/vfio.h>

#include "unique_fd.hpp"
#include "unique_mmap.hpp"
#include "vfio_container.hpp"

namespace mrsync::test {

class Edu {
public:
	static constexpr std::uint64_t kStagingIova = 0x1000;
	static constexpr std::size_t kMaxDma = 4095; /* 4096 aborts QEMU 7.2 */
	static constexpr unsigned kMaskBits = 28;

	/** Finds the edu device, opens its group in a new container, maps
	 *  BAR0 and the staging page, turns bus mastering on.
	 *  @return the device, or an error saying which step failed. */
	static Result<Edu> open(int iommu_type = vfio::Container::kType1v2);

	/** The container, for mrsync to adopt (mrsync_vfio_params). */
	int container_fd() const noexcept { return container_.fd(); }

	/** The vfio driver's arg that adopts this container, with the
	 *  device's DMA mask. */
	mrsync_vfio_params vfio_params() const noexcept
	{
		mrsync_vfio_params vp = MRSYNC_VFIO_PARAMS_INIT;
		vp.flags = MRSYNC_VFIO_F_ADOPT_CONTAINER;
		vp.container_fd = container_fd();
		vp.dma_mask_bits = kMaskBits;
		return vp;
	}
	const vfio::Container &container() const noexcept { return container_; }

	/** Writes `bytes` (at most kMaxDma) to `iova` by DMA and waits. */
	Status write(std::uint64_t iova, std::span<const std::byte> bytes);
	/** Starts the device-buffer-to-RAM half of a write of `len` bytes
	 *  already in the device buffer (load()), without waiting. */
	void start_to_ram(std::uint64_t iova, std::size_t len);
	/** DMAs `bytes` into the device buffer and waits. */
	Status load(std::span<const std::byte> bytes);
	/** Polls the running DMA until it completes. */
	Status wait();

	/** The device's identification register (0x010000ed). */
	std::uint32_t id() const;

private:
	Edu() = default;
	void start(std::uint64_t src, std::uint64_t dst, std::size_t len, bool to_ram);
	volatile std::uint64_t *reg64(std::size_t off) const;

	vfio::Container container_;
	detail::UniqueFd device_;
	detail::UniqueMmap bar0_;
	detail::UniqueMmap staging_;
};

/** The PCI address of the edu device, if one is present. */
std::optional<std::string> find_edu();

/** DMAR faults the kernel logged so far ("DMAR: [DMA Write]" / "[DMA Read]"
 *  lines in the kernel ring buffer). */
std::size_t dmar_faults();

/** Whether the kernel logged a DMAR fault beyond the first `before`, waiting
 *  up to 2 s: the fault interrupt is handled after the DMA completes. */
bool dmar_fault_since(std::size_t before);

/** The params of a vfio-driver context with the kernel module as its source
 *  (`vp` must outlive the creation). */
inline mrsync_params vfio_ctx_params(const mrsync_vfio_params &vp, std::uint32_t flags = 0)
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "vfio";
	p.driver_arg = &vp;
	p.sources = MRSYNC_SOURCE_KMOD;
	p.flags = flags;
	return p;
}

/** For a guest gtest binary's mrsync_vm_helper(): opens the edu device once
 *  (a group opens once at a time) and points `edu` at it.
 *  @return -1 (run the tests), or, without the device, after saying why,
 *          77 on the host (skipped) and 1 in the guest (MRSYNC_VM_GUEST). */
int open_edu_once(const char *argv0, Edu *&edu,
		  int iommu_type = vfio::Container::kType1v2);

/** `n` fresh private anonymous pages, zeroed and populated; at `at`
 *  (MAP_FIXED: an allocator reusing an address) when given. Aborts if the
 *  mmap fails: nothing a test could go on with. */
std::byte *map_pages(std::size_t n, void *at = nullptr);
/** `n` bytes derived from `seed`, never 0 (fresh pages are). */
std::vector<std::byte> pattern(std::size_t n, unsigned seed);
/** Whether memory at `at` holds `bytes`. */
bool holds(const std::byte *at, std::span<const std::byte> bytes);

/** The IOVA of `va` inside a vfio-driver registration. */
inline std::uint64_t iova_of(const Registration &reg, std::uint64_t va)
{
	const mrsync_reg raw{reg.addr(), reg.length(), reg.lkey(), reg.rkey(), nullptr};
	return mrsync_vfio_iova(&raw, reinterpret_cast<const void *>(va));
}

} // namespace mrsync::test

#endif
