/* SPDX-License-Identifier: MIT */
/* --extbuf=vfio|dma-map-once: Tx mbufs carry external buffers cut from plain
 * anonymous (non-hugepage) memory, sent by a real NIC (DPDK's own PMD on a
 * device bound to vfio-pci) and checked by content on the peer port
 * (docs/vfio.md, "mrpmd on e1000").
 *
 *  - vfio: the buffers' IOVAs come from mrsync's vfio driver adopting DPDK's
 *    own VFIO container; every burst looks the area up (one mrsync_get: the
 *    generation check, a resync when the memory changed). The IOVA is the
 *    key and never changes.
 *  - dma-map-once (the negative control): the area is registered and mapped
 *    once by hand, rte_extmem_register + rte_dev_dma_map, as applications do
 *    today, and never resynced.
 *
 * With --churn a control thread keeps replacing the area's chunks with fresh
 * pages (mmap MAP_FIXED over them, then refilled). A chunk is replaced only
 * when none of its buffers is in flight (the application never remaps memory
 * the NIC may still read), so any stale packet is the translation's. */
#ifndef MRPMD_EXTBUF_VFIO_HPP
#define MRPMD_EXTBUF_VFIO_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <rte_mbuf.h>

#include <mrsync/mrsync.hpp>

struct rte_device;

namespace mrpmd {

struct App;

enum class ExtbufMode { off, vfio, dma_map_once };

/** --extbuf's value (options.cpp checked it): vfio or dma-map-once. */
ExtbufMode extbuf_mode(const std::string &name);
const char *extbuf_mode_name(ExtbufMode mode);

/** What the extbuf engine counts; written by the one forwarding lcore (and
 *  the churn thread for `remaps`), read racily by the stats. */
struct ExtbufCounters {
	std::atomic<std::uint64_t> sent{0}, received{0}, checked{0};
	std::atomic<std::uint64_t> stale{0};   /* an older packet's content: a stale IOVA */
	std::atomic<std::uint64_t> reordered{0}; /* first copies that came after later ones */
	/* not what any sender wrote: on a hub only our ports reach, every frame
	 * is a sender's, so a stale page's old filler counts here too */
	std::atomic<std::uint64_t> garbled{0};
	std::atomic<std::uint64_t> no_slot{0}; /* every buffer in flight or being replaced */
	std::atomic<std::uint64_t> lookup_errors{0};
	std::atomic<std::uint64_t> remaps{0}, remap_skips{0};
};

/**
 * The external-buffer area, its translation and its churn. Slots are taken
 * and written by the one forwarding lcore; a slot comes back when DPDK frees
 * its mbuf (the PMD's Tx cleanup on that lcore, or port close).
 * Thread safety: take()/translate() on the forwarding lcore only; the churn
 * thread is internal; stats from any thread.
 */
class ExtbufArea {
public:
	static constexpr std::size_t kSlot = 2048;        /* one packet buffer */
	static constexpr std::size_t kChunk = 256u << 10; /* the unit the churn replaces */
	/* 16 MiB, 8192 slots: well above what two 1024-entry Tx rings hold,
	 * so the lcore never waits for the PMD's lazy Tx cleanup */
	static constexpr std::size_t kChunks = 64;
	static constexpr std::size_t kBytes = kChunk * kChunks;
	static constexpr std::size_t kSlots = kBytes / kSlot;

	explicit ExtbufArea(ExtbufMode mode);
	~ExtbufArea();
	ExtbufArea(const ExtbufArea &) = delete;
	ExtbufArea &operator=(const ExtbufArea &) = delete;

	/** Maps the area and sets up its translation; false with a message. */
	bool init();
	void start_churn();
	void stop_churn();

	/** A free slot of a chunk not being replaced, now owned by the caller
	 *  until its mbuf is freed; -1 if none. */
	int take();
	/** Hands a slot back that was never attached (a failed mbuf allocation). */
	void give_back(int slot) noexcept;
	std::uint8_t *slot_va(int slot) const noexcept { return base_ + std::size_t(slot) * kSlot; }
	/** Attaches slot `slot` to `m` at `iova_base` (from translate()). */
	void attach(rte_mbuf *m, int slot, std::uint64_t iova_base) noexcept;
	/** The IOVA of the area's first byte, valid for every slot taken before
	 *  the call: vfio looks the area up now (resyncing what changed since),
	 *  dma-map-once returns what it mapped at start. nullopt on error. */
	std::optional<std::uint64_t> translate();

	ExtbufMode mode() const noexcept { return mode_; }
	ExtbufCounters &counters() noexcept { return counters_; }
	/** The vfio driver's context (nullptr for dma-map-once). */
	mrsync_ctx *ctx() const noexcept { return ctx_ ? ctx_->c_handle() : nullptr; }
	std::uint64_t iova_window() const noexcept { return iova_base_; }

private:
	struct alignas(64) Chunk {
		std::atomic<bool> published{true};
		std::atomic<std::uint32_t> in_flight{0};
	};
	static void on_free(void *addr, void *opaque);
	void release(int slot) noexcept;
	bool init_vfio();
	bool init_dma_map_once();
	void churn_loop();
	bool replace_chunk(std::size_t k);

	ExtbufMode mode_;
	std::uint8_t *base_ = nullptr;
	std::uint64_t iova_base_ = 0;
	std::unique_ptr<mrsync::Context> ctx_;
	mrsync::Registration held_; /* the last burst's lookup, until the next one's */
	rte_device *mapped_dev_ = nullptr; /* dma-map-once: the device it mapped through */
	bool extmem_ = false;
	Chunk chunks_[kChunks];
	std::vector<rte_mbuf_ext_shared_info> shinfo_;
	std::unique_ptr<std::atomic<bool>[]> busy_;
	std::size_t cursor_ = 0;
	ExtbufCounters counters_;
	std::thread churn_;
	std::atomic<bool> stop_{false};
};

/** The extbuf engine's lcore: Tx bursts of external-buffer packets on every
 *  stream's Tx port, Rx on its Rx port, each packet checked by content. */
int extbuf_forward_loop(void *app);
/** Its stats block and one `mrpmd-extbuf: key=value` line. */
void print_extbuf_stats(App &app);

} // namespace mrpmd

#endif
