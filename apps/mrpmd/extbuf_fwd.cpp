/* SPDX-License-Identifier: MIT */
/* The --extbuf engine: every stream sends bursts of external-buffer packets
 * (ExtbufArea) on its Tx port and receives on its Rx port; with two NICs on
 * one hub each port receives what the other sent. The receiver checks every
 * packet by content: a packet carries its sender port and a per-port
 * sequence number, and bytes that follow from both. A NIC that read a stale
 * IOVA sends what an *earlier* packet left in the old pages: a sequence
 * number already received (stale). Anything else that is ours but not what
 * a sender wrote is garbled. Both are corrupted packets. A sequence number
 * lower than the highest seen but never seen before is counted apart
 * (reordered): the wire is in order, so it is an old packet whose first
 * copy was dropped -- with dma-map-once these are stale reads too, but
 * the test does not need them to fail. */
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_mbuf.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "app.hpp"
#include "extbuf_vfio.hpp"

namespace mrpmd {
namespace {

constexpr std::uint16_t kEtherType = 0x88b5; /* IEEE local experimental */
constexpr std::uint32_t kMagic = 0x6d727362;   /* "mrsb" */
constexpr unsigned kMaxBurst = 512;

struct Tag {
	std::uint32_t magic;
	std::uint16_t port, len;
	std::uint64_t seq;
};
constexpr std::size_t kHead = sizeof(rte_ether_hdr) + sizeof(Tag);

std::uint8_t fill_byte(std::uint64_t seq, std::uint16_t port, std::size_t i)
{
	return std::uint8_t(seq * 0x9d + (seq >> 8) * 0x3b + port * 0x55 + i * 7);
}

void write_packet(std::uint8_t *p, std::uint16_t len, std::uint16_t port, std::uint64_t seq,
		  const rte_ether_addr &src)
{
	rte_ether_hdr eth{};
	std::memset(eth.dst_addr.addr_bytes, 0xff, RTE_ETHER_ADDR_LEN);
	eth.src_addr = src;
	eth.ether_type = rte_cpu_to_be_16(kEtherType);
	const Tag tag{kMagic, port, len, seq};
	std::memcpy(p, &eth, sizeof eth);
	std::memcpy(p + sizeof eth, &tag, sizeof tag);
	for (std::size_t i = kHead; i < len; ++i)
		p[i] = fill_byte(seq, port, i);
}

enum class Verdict { ok, reordered, stale, garbled };

/* Which sequence numbers of one sender arrived: a bit each, over a window
 * far longer than a run (4 Mi packets; older ones count as stale). */
class Seen {
public:
	static constexpr std::uint64_t kWindow = 1u << 22;
	Seen() : bits_(kWindow / 64) {}
	/* Marks seq; false if it was already there (or fell out of the window). */
	bool mark(std::uint64_t seq)
	{
		if (seq + kWindow <= high_)
			return false;
		for (; high_ < seq; ++high_) /* forget what the window slides past */
			if (high_ + 1 > kWindow)
				clear(high_ + 1 - kWindow);
		std::uint64_t &w = bits_[(seq % kWindow) / 64];
		const std::uint64_t bit = 1ull << (seq % 64);
		const bool fresh = !(w & bit);
		w |= bit;
		return fresh;
	}
	std::uint64_t high() const noexcept { return high_; }

private:
	void clear(std::uint64_t seq) { bits_[(seq % kWindow) / 64] &= ~(1ull << (seq % 64)); }
	std::vector<std::uint64_t> bits_;
	std::uint64_t high_ = 0;
};

Verdict check(rte_mbuf *m, std::vector<Seen> &seen)
{
	std::uint8_t copy[RTE_ETHER_MAX_LEN];
	const std::uint32_t n = std::min<std::uint32_t>(m->pkt_len, sizeof copy);
	const auto *p = static_cast<const std::uint8_t *>(rte_pktmbuf_read(m, 0, n, copy));
	rte_ether_hdr eth;
	if (!p || n < kHead)
		return Verdict::garbled;
	std::memcpy(&eth, p, sizeof eth);
	if (eth.ether_type != rte_cpu_to_be_16(kEtherType))
		return Verdict::garbled;
	Tag tag;
	std::memcpy(&tag, p + sizeof eth, sizeof tag);
	if (tag.magic != kMagic || tag.port >= seen.size() || tag.len > n || tag.len < kHead)
		return Verdict::garbled;
	for (std::size_t i = kHead; i < tag.len; ++i)
		if (p[i] != fill_byte(tag.seq, tag.port, i))
			return Verdict::garbled;
	/* Every sequence number is sent once: seeing one again is an earlier
	 * packet's bytes, read again through a stale IOVA. */
	Seen &s = seen[tag.port];
	const bool late = tag.seq < s.high();
	if (!s.mark(tag.seq))
		return Verdict::stale;
	return late ? Verdict::reordered : Verdict::ok;
}

struct Sender {
	App &app;
	ExtbufArea &area;
	LcoreCounters &c;
	std::uint64_t seq[RTE_MAX_ETHPORTS] = {};

	/* Takes up to `burst` slots, writes the packets, looks the area up,
	 * attaches and sends. */
	void send(std::uint16_t port, std::uint16_t queue, std::uint16_t burst)
	{
		rte_mbuf *pkts[kMaxBurst];
		int slots[kMaxBurst];
		const std::uint16_t len = app.opt.txpkt_len;
		rte_ether_addr src;
		rte_eth_macaddr_get(port, &src);
		std::uint16_t n = 0;
		for (int s; n < burst && (s = area.take()) >= 0; ++n) {
			slots[n] = s;
			write_packet(area.slot_va(s), len, port, seq[port] + 1 + n, src);
		}
		if (!n)
			return;
		seq[port] += n; /* unsent ones leave a gap: the receiver allows it */
		const std::optional<std::uint64_t> iova =
			rte_pktmbuf_alloc_bulk(app.pool, pkts, n) == 0 ? area.translate() : std::nullopt;
		if (!iova) {
			for (std::uint16_t i = 0; i < n; ++i)
				area.give_back(slots[i]);
			c.dropped += n;
			return;
		}
		for (std::uint16_t i = 0; i < n; ++i) {
			area.attach(pkts[i], slots[i], *iova);
			pkts[i]->data_len = pkts[i]->pkt_len = len;
		}
		const std::uint16_t sent = rte_eth_tx_burst(port, queue, pkts, n);
		c.tx += sent;
		area.counters().sent += sent;
		if (sent < n) {
			c.dropped += n - sent;
			rte_pktmbuf_free_bulk(pkts + sent, n - sent); /* slots come back */
		}
	}
};

} // namespace

int extbuf_forward_loop(void *arg)
{
	App &app = *static_cast<App *>(arg);
	const unsigned lcore = rte_lcore_id();
	/* --extbuf runs one forwarding lcore (options.cpp): every stream is its */
	const std::vector<Stream> &streams = app.streams_of.front();
	LcoreCounters &c = app.counters[lcore];
	ExtbufArea &area = *app.extbuf;
	ExtbufCounters &ec = area.counters();
	Sender sender{app, area, c};
	std::vector<Seen> seen(app.nb_ports);
	rte_mbuf *pkts[kMaxBurst];
	while (app.forwarding.load(std::memory_order_relaxed)) {
		for (const Stream &s : streams) {
			sender.send(s.tx_port, s.tx_queue, app.opt.burst);
			const std::uint16_t n =
				rte_eth_rx_burst(s.rx_port, s.rx_queue, pkts, app.opt.burst);
			c.rx += n;
			ec.received += n;
			for (std::uint16_t i = 0; i < n; ++i) {
				switch (check(pkts[i], seen)) {
				case Verdict::ok: ++ec.checked; break;
				case Verdict::reordered: ++ec.checked, ++ec.reordered; break;
				case Verdict::stale: ++ec.stale, ++c.corrupted; break;
				case Verdict::garbled: ++ec.garbled, ++c.corrupted; break;
				}
			}
			rte_pktmbuf_free_bulk(pkts, n);
		}
	}
	return 0;
}

void print_extbuf_stats(App &app)
{
	ExtbufArea &area = *app.extbuf;
	const ExtbufCounters &e = area.counters();
	mrsync_stats s{};
	if (area.ctx())
		mrsync_get_stats(area.ctx(), &s, sizeof s);
	printf("  ################ external buffers (--extbuf=%s) ################\n"
	       "  sent: %" PRIu64 "  received: %" PRIu64 "  checked good: %" PRIu64
	       "  stale: %" PRIu64 "  garbled: %" PRIu64 "  late (first copies, not counted): %" PRIu64 "\n"
	       "  chunks replaced: %" PRIu64 " (%" PRIu64 " skipped: buffers in flight)"
	       "  no free buffer: %" PRIu64 "  lookup errors: %" PRIu64 "\n"
	       "  vfio driver: resyncs %" PRIu64 ", entries invalidated %" PRIu64
	       ", re-mapped %" PRIu64 ", key changes %" PRIu64 "\n",
	       extbuf_mode_name(area.mode()), e.sent.load(), e.received.load(), e.checked.load(),
	       e.stale.load(), e.garbled.load(), e.reordered.load(), e.remaps.load(),
	       e.remap_skips.load(), e.no_slot.load(), e.lookup_errors.load(), s.resyncs,
	       s.entries_invalidated, s.entries_repinned, s.key_changes);
	/* One line for scripts (test/vm/mrpmd_e1000.cc). */
	printf("mrpmd-extbuf: mode=%s sent=%" PRIu64 " received=%" PRIu64 " checked=%" PRIu64
	       " stale=%" PRIu64 " garbled=%" PRIu64 " corrupted=%" PRIu64 " reordered=%" PRIu64
	       " remaps=%" PRIu64
	       " resyncs=%" PRIu64 " entries_invalidated=%" PRIu64 " entries_remapped=%" PRIu64
	       " key_changes=%" PRIu64 " iova=0x%" PRIx64 "\n",
	       extbuf_mode_name(area.mode()), e.sent.load(), e.received.load(), e.checked.load(),
	       e.stale.load(), e.garbled.load(), e.stale.load() + e.garbled.load(),
	       e.reordered.load(), e.remaps.load(), s.resyncs, s.entries_invalidated, s.entries_repinned,
	       s.key_changes, area.iova_window());
	fflush(stdout);
}

} // namespace mrpmd
