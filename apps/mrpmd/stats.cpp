/* SPDX-License-Identifier: MIT */
/* testpmd-style port stats plus the registration cache's counters. */
#include <cinttypes>
#include <cstdio>

#include "app.hpp"
#include "churn.hpp"
#include "extbuf_vfio.hpp"

namespace mrpmd {
namespace {

struct PortWindow {
	std::uint64_t rx = 0, tx = 0;
	std::chrono::steady_clock::time_point at{};
};
PortWindow windows[RTE_MAX_ETHPORTS];

LcoreCounters sum_counters(const App &app)
{
	LcoreCounters t;
	for (unsigned lcore : app.fwd_lcores) {
		const LcoreCounters &c = app.counters[lcore];
		t.rx += c.rx;
		t.tx += c.tx;
		t.dropped += c.dropped;
		t.lookup_errors += c.lookup_errors;
		t.dma += c.dma;
		t.corrupted += c.corrupted;
		t.refused += c.refused;
		t.staged += c.staged;
	}
	return t;
}

/* Calls fn(port, stats) for every port whose counters can be read. */
template <typename Fn>
void for_each_port_stats(const App &app, Fn fn)
{
	for (std::uint16_t p = 0; p < app.nb_ports; ++p) {
		rte_eth_stats s;
		if (rte_eth_stats_get(p, &s) == 0)
			fn(p, s);
	}
}

/* testpmd's two lines of forward statistics. */
void print_rx_tx(std::uint64_t rx, std::uint64_t rx_dropped, std::uint64_t tx,
		 std::uint64_t tx_dropped)
{
	printf("  RX-packets: %-14" PRIu64 " RX-dropped: %-14" PRIu64 " RX-total: %" PRIu64 "\n"
	       "  TX-packets: %-14" PRIu64 " TX-dropped: %-14" PRIu64 " TX-total: %" PRIu64 "\n",
	       rx, rx_dropped, rx + rx_dropped, tx, tx_dropped, tx + tx_dropped);
}

double seconds_since(std::chrono::steady_clock::time_point t)
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

} // namespace

void reset_rate_window(App &app)
{
	const auto now = std::chrono::steady_clock::now();
	app.started = now;
	/* Like testpmd: each start counts from zero. */
	for (std::uint16_t p = 0; p < app.nb_ports; ++p) {
		rte_eth_stats_reset(p);
		windows[p] = {0, 0, now};
	}
}

void print_port_stats(App &app)
{
	for_each_port_stats(app, [](std::uint16_t p, const rte_eth_stats &s) {
		PortWindow &w = windows[p];
		const double dt = seconds_since(w.at);
		const double rx_mpps = dt > 0 ? double(s.ipackets - w.rx) / dt / 1e6 : 0;
		const double tx_mpps = dt > 0 ? double(s.opackets - w.tx) / dt / 1e6 : 0;
		w = {s.ipackets, s.opackets, std::chrono::steady_clock::now()};
		printf("  ######################## NIC statistics for port %-2u ########################\n"
		       "  RX-packets: %-14" PRIu64 " RX-missed: %-10" PRIu64 " RX-bytes: %" PRIu64 "\n"
		       "  TX-packets: %-14" PRIu64 " TX-errors: %-10" PRIu64 " TX-bytes: %" PRIu64 "\n"
		       "  Throughput (since last show)\n"
		       "  Rx-pps: %12.0f          Tx-pps: %12.0f   (Rx %.2f Mpps, Tx %.2f Mpps)\n",
		       p, s.ipackets, s.imissed, s.ibytes, s.opackets, s.oerrors, s.obytes,
		       rx_mpps * 1e6, tx_mpps * 1e6, rx_mpps, tx_mpps);
	});
	fflush(stdout);
}

void print_mrsync_stats(App &app)
{
	mrsync_dpdk_stats s{};
	mrsync_dpdk_get_stats(app.md, &s, sizeof s);
	mrsync_stats core{};
	mrsync_get_stats(mrsync_dpdk_ctx(app.md), &core, sizeof core);
	const LcoreCounters t = sum_counters(app);
	const double hit_rate = s.lookups ? 100.0 * double(s.lcore_hits) / double(s.lookups) : 0;
	printf("  ######################## mrsync (%s) ########################\n"
	       "  lookups: %" PRIu64 "  lcore hit rate: %.4f%%  lcore flushes: %" PRIu64
	       "  lookup errors: %" PRIu64 "\n"
	       "  resyncs: %" PRIu64 "  full resyncs: %" PRIu64 "  pages re-pinned: %" PRIu64
	       "  entries invalidated: %" PRIu64 "  compactions: %" PRIu64 "\n"
	       "  EAL memory events: %" PRIu64 " alloc, %" PRIu64 " free  regions: %" PRIu64
	       "  pinned: %" PRIu64 " KiB\n"
	       "  HCA payloads: %" PRIu64 " (%" PRIu64 " via churned buffers)  refused: %" PRIu64
	       "  corrupted packets: %" PRIu64 "\n",
	       mrsync_driver_name(mrsync_dpdk_ctx(app.md)), s.lookups, hit_rate, s.lcore_flushes,
	       t.lookup_errors, core.resyncs, core.full_resyncs, core.entries_repinned,
	       core.entries_invalidated, core.compactions, s.mem_alloc_events,
	       s.mem_free_events, core.regions, core.pinned_bytes >> 10, t.dma, t.staged,
	       t.refused, t.corrupted);
	if (app.churn)
		printf("  churn: %" PRIu64 " hugepage and %" PRIu64 " anonymous buffer cycles\n",
		       app.churn->hugepage_cycles(), app.churn->anon_cycles());
	fflush(stdout);
}

void print_fwd_stats(App &app)
{
	/* testpmd's layout: per port, then accumulated; counted since `start`
	 * (or the last `clear port stats all`). */
	rte_eth_stats all{};
	for_each_port_stats(app, [&](std::uint16_t p, const rte_eth_stats &s) {
		all.ipackets += s.ipackets;
		all.imissed += s.imissed;
		all.opackets += s.opackets;
		all.oerrors += s.oerrors;
		printf("\n  ---------------------- Forward statistics for port %-2u "
		       "----------------------\n", p);
		print_rx_tx(s.ipackets, s.imissed, s.opackets, s.oerrors);
	});
	printf("\n  +++++++++++++++ Accumulated forward statistics for all ports +++++++++++++++\n");
	print_rx_tx(all.ipackets, all.imissed, all.opackets, all.oerrors);
	/* what a full TX queue refused, the lcores freed */
	const LcoreCounters t = sum_counters(app);
	printf("  lcores (since launch): forwarded %" PRIu64 ", dropped at TX %" PRIu64
	       ", corrupted %" PRIu64 "\n", t.tx, t.dropped, t.corrupted);
	fflush(stdout);
}

std::uint64_t corrupted_packets(const App &app)
{
	return sum_counters(app).corrupted;
}

void print_final_stats(App &app)
{
	const double dt = seconds_since(app.started);
	printf("\n  ---------------------- Forward statistics (%s, %.2f s) ----------------------\n",
	       fwd_mode_name(app.mode.load()), dt);
	std::uint64_t rx = 0, tx = 0;
	for_each_port_stats(app, [&](std::uint16_t p, const rte_eth_stats &s) {
		rx += s.ipackets;
		tx += s.opackets;
		printf("  port %u: RX-packets: %-14" PRIu64 " TX-packets: %-14" PRIu64
		       " RX %.2f Mpps  TX %.2f Mpps\n",
		       p, s.ipackets, s.opackets, dt > 0 ? double(s.ipackets) / dt / 1e6 : 0,
		       dt > 0 ? double(s.opackets) / dt / 1e6 : 0);
	});
	print_mrsync_stats(app);
	mrsync_dpdk_stats s{};
	mrsync_dpdk_get_stats(app.md, &s, sizeof s);
	mrsync_stats core{};
	mrsync_get_stats(mrsync_dpdk_ctx(app.md), &core, sizeof core);
	const LcoreCounters t = sum_counters(app);
	const std::uint64_t forwarded = app.mode.load() == FwdMode::rxonly ? rx : tx;
	if (app.extbuf)
		print_extbuf_stats(app);
	/* One line for scripts (compare-testpmd, the tests). */
	printf("mrpmd: mode=%s hca=%s seconds=%.2f rx=%" PRIu64 " tx=%" PRIu64 " mpps=%.3f "
	       "lookups=%" PRIu64 " hit_rate=%.4f resyncs=%" PRIu64 " pages_repinned=%" PRIu64
	       " payloads=%" PRIu64 " refused=%" PRIu64 " corrupted=%" PRIu64 "\n",
	       fwd_mode_name(app.mode.load()), app.opt.hca.c_str(), dt, rx, tx,
	       dt > 0 ? double(forwarded) / dt / 1e6 : 0, s.lookups,
	       s.lookups ? double(s.lcore_hits) / double(s.lookups) : 0, core.resyncs,
	       core.entries_repinned, t.dma, t.refused, t.corrupted);
	fflush(stdout);
}

} // namespace mrpmd
