/* SPDX-License-Identifier: MIT */
/* mrpmd's application arguments (after the EAL's and `--`), testpmd's names. */
#ifndef MRPMD_OPTIONS_HPP
#define MRPMD_OPTIONS_HPP

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mrpmd {

enum class FwdMode { io, mac, macswap, rxonly, txonly };

std::optional<FwdMode> parse_fwd_mode(std::string_view name);
const char *fwd_mode_name(FwdMode mode);

struct Options {
	FwdMode mode = FwdMode::io;
	unsigned stats_period = 0; /* seconds; 0 = none */
	unsigned nb_cores = 1;
	std::uint16_t rxq = 1, txq = 1;
	std::uint16_t burst = 32;
	std::uint32_t total_num_mbufs = 8192;
	std::string hca = "uring"; /* uring | verbs | none */
	bool churn = false;
	double seconds = 0; /* run this long, then stop; 0 = until SIGINT / quit */
	bool interactive = false;
	bool auto_start = true;
	bool no_generation_check = false; /* TEST ONLY: negative control */
	std::uint16_t txpkt_len = 64;
	std::string extbuf; /* --extbuf: vfio | dma-map-once; empty = off */
	/* testpmd's multi-process options: this process forwards the proc-id'th
	 * share of every port's queues (the EAL's --proc-type says who owns the
	 * ports: a secondary uses them as the primary configured them). */
	unsigned num_procs = 1, proc_id = 0;
};

/** Parses argv (the part after `--`; argv[0] is the program) into `o`.
 *  @return nullopt to go on, or the exit code: 0 after --help (usage on
 *          stdout), 2 after a bad option (a message naming it on stderr). */
std::optional<int> parse_options(int argc, char **argv, Options &o);

/** The driver name libmrsync knows for --hca. */
const char *driver_for_hca(const std::string &hca);

} // namespace mrpmd

#endif
