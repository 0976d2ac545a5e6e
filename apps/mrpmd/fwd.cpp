/* SPDX-License-Identifier: MIT */
/* The forwarding lcores. Every packet's key comes from the lcore's mrsync
 * cache, as an RDMA dataplane would post it. With --hca=uring the payload
 * also moves through the software HCA: a stamp is DMA-written into the mbuf
 * (and, with --churn, into a staging buffer that the churn thread keeps
 * freeing and reallocating) and the CPU checks it sees the stamp. A stale
 * translation makes the HCA write into pages the application no longer has:
 * a corrupted packet, counted. */
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <span>

#include "app.hpp"
#include "churn.hpp"
#include "extbuf_vfio.hpp"

namespace mrpmd {
namespace {

constexpr std::size_t kStamp = 32;
constexpr unsigned kMaxBurst = 512;

using Stamp = std::array<std::byte, kStamp>;

Stamp make_stamp(std::uint64_t seq)
{
	Stamp s;
	for (std::size_t i = 0; i < kStamp; i += 8) {
		const std::uint64_t v = seq * 0x9e3779b97f4a7c15ull + i + 1;
		std::memcpy(s.data() + i, &v, 8);
	}
	return s;
}

/* One lcore's DMA batch. For each payload the HCA writes a stamp into the
 * buffer (DMA in: the CPU must then see it) and reads out the 32 bytes after
 * it, which the CPU filled just before (DMA out: the HCA must see them). A
 * stale translation fails either check: a corrupted packet. The whole batch
 * moves as one HCA burst: one submission and one completion pass. */
class DmaBatch {
public:
	DmaBatch(App &app, LcoreCounters &c, unsigned lcore) : app_(app), c_(c)
	{
		tag_base_ = std::uint64_t(lcore + 1) << 48;
	}

	void post(std::uint32_t lkey, void *va)
	{
		if (n_ == posted_.size())
			finish();
		Posted &p = posted_[n_];
		auto *bytes = static_cast<std::byte *>(va);
		p.va = bytes;
		++seq_;
		p.in = make_stamp(seq_ ^ tag_base_);
		p.out = make_stamp(~seq_ ^ tag_base_);
		std::memcpy(bytes + kStamp, p.out.data(), kStamp);
		const auto at = reinterpret_cast<std::uint64_t>(bytes);
		ops_[2 * n_] = {.lkey = lkey, .va = at, .buf = p.in.data(), .len = kStamp,
				.into_memory = true};
		ops_[2 * n_ + 1] = {.lkey = lkey, .va = at + kStamp, .buf = p.seen.data(),
				    .len = kStamp, .into_memory = false};
		++n_;
	}

	/* Moves every posted pair and checks both directions. */
	void finish()
	{
		if (!n_)
			return;
		const std::span<int> results(results_.data(), 2 * n_);
		if (!app_.hca->burst({ops_.data(), 2 * n_}, results))
			std::fill(results.begin(), results.end(), -ECANCELED);
		for (std::size_t i = 0; i < n_; ++i) {
			const Posted &p = posted_[i];
			++c_.dma;
			if (results[2 * i] < 0 || results[2 * i + 1] < 0)
				++c_.refused;
			else if (std::memcmp(p.va, p.in.data(), kStamp) != 0 || p.seen != p.out)
				++c_.corrupted;
		}
		n_ = 0;
	}

private:
	struct Posted {
		std::byte *va;
		Stamp in, out, seen;
	};
	static constexpr std::size_t kPairs = kMaxBurst + 1;
	App &app_;
	LcoreCounters &c_;
	std::array<Posted, kPairs> posted_{};
	std::array<mrsync::uring::DmaOp, 2 * kPairs> ops_{};
	std::array<int, 2 * kPairs> results_{};
	std::size_t n_ = 0;
	std::uint64_t seq_ = 0, tag_base_ = 0;
};

void set_macs(rte_mbuf *m, FwdMode mode, std::uint16_t tx_port)
{
	auto *eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
	if (mode == FwdMode::macswap) {
		rte_ether_addr tmp = eth->dst_addr;
		eth->dst_addr = eth->src_addr;
		eth->src_addr = tmp;
	} else {
		rte_eth_macaddr_get(tx_port, &eth->src_addr);
		eth->dst_addr = {{0x02, 0, 0, 0, 0, std::uint8_t(tx_port)}};
	}
}

std::uint16_t make_txonly_burst(App &app, rte_mbuf **pkts, std::uint16_t n)
{
	if (rte_pktmbuf_alloc_bulk(app.pool, pkts, n) != 0)
		return 0;
	for (std::uint16_t i = 0; i < n; ++i) {
		rte_mbuf *m = pkts[i];
		m->data_len = m->pkt_len = app.opt.txpkt_len;
		auto *eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
		eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
	}
	return n;
}

int forward_loop(void *arg)
{
	App &app = *static_cast<App *>(arg);
	const unsigned lcore = rte_lcore_id();
	std::size_t index = 0;
	while (app.fwd_lcores[index] != lcore)
		++index;
	const std::vector<Stream> &streams = app.streams_of[index];
	LcoreCounters &c = app.counters[lcore];
	mrsync_dpdk_lcore *cache = mrsync_dpdk_lcore_cache(app.md);
	const std::uint16_t burst = app.opt.burst;
	const bool dma = app.hca != nullptr;
	DmaBatch batch(app, c, lcore);
	rte_mbuf *pkts[kMaxBurst];
	std::uint64_t bursts = 0;

	rte_rcu_qsbr_thread_online(app.qsbr, lcore);
	while (app.forwarding.load(std::memory_order_relaxed)) {
		const FwdMode mode = app.mode.load(std::memory_order_relaxed);
		for (const Stream &s : streams) {
			const std::uint16_t n =
				mode == FwdMode::txonly
					? make_txonly_burst(app, pkts, burst)
					: rte_eth_rx_burst(s.rx_port, s.rx_queue, pkts, burst);
			if (!n)
				continue;
			if (mode != FwdMode::txonly)
				c.rx += n;
			/* Every packet's key, as an RDMA dataplane would post it. */
			std::uint32_t lkeys[kMaxBurst];
			if (mrsync_dpdk_mbuf_lkeys(cache, pkts, n, lkeys) < 0) [[unlikely]]
				for (std::uint16_t i = 0; i < n; ++i)
					c.lookup_errors += lkeys[i] == 0;
			if (dma)
				for (std::uint16_t i = 0; i < n; ++i)
					if (lkeys[i])
						batch.post(lkeys[i], rte_pktmbuf_mtod(pkts[i], void *));
			if (dma && app.churn) {
				/* One payload per burst into a churned staging buffer. */
				const unsigned k = unsigned(bursts % Churn::kSlabs);
				if (std::uint8_t *slab = app.churn->slab(k)) {
					const std::size_t bytes = app.churn->slab_bytes(k);
					mrsync_dpdk_key key;
					if (mrsync_dpdk_lookup(cache, slab, bytes, &key) < 0) {
						++c.lookup_errors;
					} else {
						const std::size_t off = (bursts * 4096 + 64 * (bursts % 61)) %
									(bytes - 2 * kStamp);
						batch.post(key.lkey, slab + off);
						++c.staged;
					}
				}
			}
			if (dma)
				batch.finish();
			if (mode == FwdMode::rxonly) {
				rte_pktmbuf_free_bulk(pkts, n);
				continue;
			}
			if (mode == FwdMode::mac || mode == FwdMode::macswap)
				for (std::uint16_t i = 0; i < n; ++i)
					set_macs(pkts[i], mode, s.tx_port);
			const std::uint16_t sent = rte_eth_tx_burst(s.tx_port, s.tx_queue, pkts, n);
			c.tx += sent;
			if (sent < n) [[unlikely]] {
				c.dropped += n - sent;
				rte_pktmbuf_free_bulk(pkts + sent, n - sent);
			}
		}
		++bursts;
		/* The staging buffer used above is no longer referenced. */
		rte_rcu_qsbr_quiescent(app.qsbr, lcore);
	}
	rte_rcu_qsbr_thread_offline(app.qsbr, lcore);
	/* An idle lcore should not keep registrations held. */
	mrsync_dpdk_lcore_flush(cache);
	return 0;
}

} // namespace

void start_forwarding(App &app)
{
	if (app.forwarding.exchange(true))
		return;
	reset_rate_window(app);
	for (unsigned lcore : app.fwd_lcores)
		rte_eal_remote_launch(app.extbuf ? extbuf_forward_loop : forward_loop, &app, lcore);
}

void stop_forwarding(App &app)
{
	if (!app.forwarding.exchange(false))
		return;
	for (unsigned lcore : app.fwd_lcores)
		rte_eal_wait_lcore(lcore);
}

} // namespace mrpmd
