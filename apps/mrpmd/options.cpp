/* SPDX-License-Identifier: MIT */
#include "options.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "cli.hpp"

namespace mrpmd {
namespace {

const char footer[] =
	"--nb-cores=N needs N+1 EAL lcores. --hca=uring: the io_uring software HCA moves\n"
	"every packet's payload; none: lookups only; mlx5: stable rkeys on a ConnectX\n"
	"(says why not without one). Interactive commands: start, stop,\n"
	"show port stats all, show fwd stats all, show mrsync stats, clear port stats all,\n"
	"set fwd <mode> (stopped only), quit, help.\n"
	"Multi-process (testpmd's way): start a primary, then mrpmd --proc-type=secondary\n"
	"with the same --file-prefix and --rxq/--txq and --num-procs=N --proc-id=K; the\n"
	"secondary forwards its share of the queues of the ports the primary configured.\n"
	"Exit status: 1 when a payload was corrupted (or setup failed), 2 for bad options.\n";

/* testpmd's --txpkts=X[,Y]*: segment lengths; mrpmd sends their sum as one segment. */
std::optional<std::string> txpkts(const char *v, std::uint16_t &out)
{
	unsigned long total = 0;
	const char *p = v;
	do {
		char *end = nullptr;
		const unsigned long seg = std::strtoul(p, &end, 10);
		if (end == p || seg == 0 || (*end && *end != ','))
			return "segment lengths X[,Y]* adding up to 60..1500";
		total += seg;
		p = *end ? end + 1 : end;
	} while (*p && total <= 1500);
	if (total < 60 || total > 1500 || v[std::strlen(v) - 1] == ',')
		return "segment lengths X[,Y]* adding up to 60..1500";
	out = std::uint16_t(total);
	return std::nullopt;
}

} // namespace

std::optional<FwdMode> parse_fwd_mode(std::string_view name)
{
	for (FwdMode m : {FwdMode::io, FwdMode::mac, FwdMode::macswap, FwdMode::rxonly,
			  FwdMode::txonly})
		if (name == fwd_mode_name(m))
			return m;
	return std::nullopt;
}

const char *fwd_mode_name(FwdMode mode)
{
	switch (mode) {
	case FwdMode::io: return "io";
	case FwdMode::mac: return "mac";
	case FwdMode::macswap: return "macswap";
	case FwdMode::rxonly: return "rxonly";
	case FwdMode::txonly: return "txonly";
	}
	return "?";
}

const char *driver_for_hca(const std::string &hca)
{
	return hca == "none" ? "null" : hca.c_str();
}

std::optional<int> parse_options(int argc, char **argv, Options &o)
{
	namespace cli = mrsync::cli;
	const cli::Options opts{
		{"forward-mode", "MODE", "io|mac|macswap|rxonly|txonly: forwarding engine (io)",
		 [&o](const char *v) -> std::optional<std::string> {
			 auto m = parse_fwd_mode(v);
			 if (!m)
				 return std::string("io, mac, macswap, rxonly or txonly");
			 o.mode = *m;
			 return std::nullopt;
		 }},
		cli::number("stats-period", "print port and mrsync stats every N seconds",
			    o.stats_period, 0, 3600),
		cli::number("nb-cores", "forwarding lcores (1)", o.nb_cores, 1, 64),
		cli::number("rxq", "RX queues per port (1)", o.rxq, 1, 64),
		cli::number("txq", "TX queues per port (1)", o.txq, 1, 64),
		cli::number("burst", "packets per burst (32)", o.burst, 1, 512),
		cli::number("total-num-mbufs", "mbufs in the pool (8192)", o.total_num_mbufs, 1024,
			    1u << 24),
		cli::number("txpkt-len", "txonly packet length (64)", o.txpkt_len, 60, 1500),
		{"txpkts", "X[,Y]*", "testpmd's spelling: txonly segment lengths (sent as one)",
		 [&o](const char *v) { return txpkts(v, o.txpkt_len); }},
		{"hca", "DEV", "uring|verbs|mlx5|none: device the keys are for (uring)",
		 [&o](const char *v) -> std::optional<std::string> {
			 const std::string_view hca = v;
			 if (hca != "uring" && hca != "verbs" && hca != "mlx5" && hca != "none")
				 return std::string("uring, verbs, mlx5 or none");
			 o.hca = v;
			 return std::nullopt;
		 }},
		cli::flag("churn", "free and reallocate the buffers forwarding uses, under traffic",
			  o.churn),
		cli::positive("seconds", "S", "run S seconds, print the final stats, exit", o.seconds),
		{"interactive", nullptr, "the prompt (help lists its commands)",
		 [&o](const char *) -> std::optional<std::string> {
			 o.interactive = true;
			 o.auto_start = false;
			 return std::nullopt;
		 },
		 'i'},
		cli::flag("no-generation-check", "TEST ONLY: a naive cache, to see corruption",
			  o.no_generation_check),
		{"extbuf", "HOW", "vfio|dma-map-once: Tx from external buffers in plain memory, "
		 "mapped by mrsync's vfio driver or once by hand (TEST: negative control)",
		 [&o](const char *v) -> std::optional<std::string> {
			 const std::string_view how = v;
			 if (how != "vfio" && how != "dma-map-once")
				 return std::string("vfio or dma-map-once");
			 o.extbuf = v;
			 return std::nullopt;
		 }},
		cli::number("num-procs", "processes sharing the ports' queues (1)", o.num_procs, 1,
			    64),
		cli::number("proc-id", "this process's share of the queues, 0..num-procs-1 (0)",
			    o.proc_id, 0, 63),
	};
	if (auto rc = cli::parse({"mrpmd", "[EAL options] -- [options]", footer}, opts, argc, argv))
		return rc;
	if (o.proc_id >= o.num_procs || o.rxq % o.num_procs || o.txq % o.num_procs) {
		fprintf(stderr, "mrpmd: --proc-id=%u --num-procs=%u --rxq=%u --txq=%u: proc-id must "
				"be below num-procs, and rxq and txq multiples of it\n",
			o.proc_id, o.num_procs, o.rxq, o.txq);
		return 2;
	}
	if (!o.extbuf.empty() && (o.hca != "none" || o.nb_cores != 1 || o.num_procs != 1)) {
		fprintf(stderr, "mrpmd: --extbuf=%s: the NIC moves the payloads from one lcore: "
				"needs --hca=none, --nb-cores=1, --num-procs=1\n", o.extbuf.c_str());
		return 2;
	}
	if (o.churn && o.hca == "none" && o.extbuf.empty())
		fprintf(stderr, "mrpmd: note: --churn with --hca=none exercises resyncs but moves no "
				"data, so corruption cannot be seen\n");
	return std::nullopt;
}

} // namespace mrpmd
