/* SPDX-License-Identifier: MIT */
/* mrpmd's shared state: ports, forwarding lcores and their streams, the
 * counters each lcore keeps, and the registration cache. */
#ifndef MRPMD_APP_HPP
#define MRPMD_APP_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>

#include <mrsync/mrsync_dpdk.h>
#include <mrsync/uring.hpp>

#include "options.hpp"

namespace mrpmd {

class Churn;
class ExtbufArea;

/** One RX queue forwarded to one TX queue. */
struct Stream {
	std::uint16_t rx_port, rx_queue, tx_port, tx_queue;
};

/** Written by one forwarding lcore only; read racily by the stats. */
struct alignas(64) LcoreCounters {
	std::uint64_t rx = 0, tx = 0, dropped = 0;
	std::uint64_t lookup_errors = 0;
	std::uint64_t dma = 0;       /* payloads moved through the HCA */
	std::uint64_t corrupted = 0; /* payloads the CPU did not see as the HCA wrote them */
	std::uint64_t refused = 0;   /* DMA the HCA refused (invalid translation) */
	std::uint64_t staged = 0;    /* payloads copied into churned staging buffers */
};

struct App {
	Options opt;
	mrsync_dpdk *md = nullptr;
	mrsync::uring::Hca *hca = nullptr; /* --hca=uring only */
	rte_mempool *pool = nullptr;
	std::uint16_t nb_ports = 0;
	std::vector<unsigned> fwd_lcores;
	std::vector<std::vector<Stream>> streams_of; /* by index in fwd_lcores */
	std::atomic<FwdMode> mode{FwdMode::io};
	std::atomic<bool> forwarding{false};
	std::atomic<bool> quit{false};
	rte_rcu_qsbr *qsbr = nullptr; /* lcores report quiescence after each burst */
	Churn *churn = nullptr;
	ExtbufArea *extbuf = nullptr; /* --extbuf only */
	LcoreCounters counters[RTE_MAX_LCORE];
	std::chrono::steady_clock::time_point started{};
};

/** Launches the forwarding lcores (no-op if running). */
void start_forwarding(App &app);
/** Stops them and waits (no-op if stopped). */
void stop_forwarding(App &app);

/* stats.cpp */
void print_port_stats(App &app);
void print_mrsync_stats(App &app);
/** testpmd's `show fwd stats all`: per port and accumulated, since start. */
void print_fwd_stats(App &app);
/** Payloads the CPU did not see as the HCA wrote them, since launch. */
std::uint64_t corrupted_packets(const App &app);
/** The final block, ending with one line a script can parse. */
void print_final_stats(App &app);
/** Zeroes the ports' counters and the rate window (start, `clear port stats all`). */
void reset_rate_window(App &app);

} // namespace mrpmd

#endif
