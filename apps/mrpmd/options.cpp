/* SPDX-License-Identifier: MIT */
#include "options.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli.hpp"

namespace mrpmd {
namespace {

const char usage[] =
	"usage: mrpmd [EAL options] -- [options]\n"
	"  --forward-mode=io|mac|macswap|rxonly|txonly   forwarding engine (default io)\n"
	"  --stats-period=N        print port and mrsync stats every N seconds\n"
	"  --nb-cores=N            forwarding lcores (default 1; needs N+1 EAL lcores)\n"
	"  --rxq=N --txq=N         queues per port (default 1)\n"
	"  --burst=N               packets per burst, 1..512 (default 32)\n"
	"  --total-num-mbufs=N     mbufs in the pool (default 8192)\n"
	"  --txpkt-len=N           txonly packet length (default 64)\n"
	"  --hca=uring|verbs|mlx5|none  device the keys are for (default uring: the io_uring\n"
	"                          software HCA moves every packet's payload; none: lookups only)\n"
	"  --churn                 free and reallocate hugepage and external buffers the\n"
	"                          forwarding path uses, under traffic\n"
	"  --seconds=S             run S seconds, print the final stats, exit\n"
	"  -i, --interactive       prompt (start, stop, show port stats all, show mrsync stats,\n"
	"                          set fwd <mode>, quit, help)\n"
	"  --no-generation-check   TEST ONLY: a naive cache, to see corruption\n";

template <typename T>
bool number(const std::string &text, const char *name, T lo, T hi, T &out)
{
	char *end = nullptr;
	const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
	if (text.empty() || *end || v < (unsigned long long)lo || v > (unsigned long long)hi) {
		fprintf(stderr, "mrpmd: %s=%s: expected a number from %llu to %llu\n", name,
			text.c_str(), (unsigned long long)lo, (unsigned long long)hi);
		return false;
	}
	out = T(v);
	return true;
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

std::optional<Options> parse_options(int argc, char **argv)
{
	using mrsync::cli::option;
	Options o;
	for (int i = 1; i < argc; ++i) {
		const std::string_view arg = argv[i];
		if (arg == "-h" || arg == "--help") {
			fputs(usage, stdout);
			std::exit(0);
		} else if (auto v = option(argc, argv, i, "--forward-mode")) {
			auto m = parse_fwd_mode(*v);
			if (!m) {
				fprintf(stderr, "mrpmd: --forward-mode=%s: expected io, mac, macswap, "
						"rxonly or txonly\n", v->c_str());
				return std::nullopt;
			}
			o.mode = *m;
		} else if (auto v = option(argc, argv, i, "--stats-period")) {
			if (!number(*v, "--stats-period", 0u, 3600u, o.stats_period))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--nb-cores")) {
			if (!number(*v, "--nb-cores", 1u, 64u, o.nb_cores))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--rxq")) {
			if (!number<std::uint16_t>(*v, "--rxq", 1, 64, o.rxq))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--txq")) {
			if (!number<std::uint16_t>(*v, "--txq", 1, 64, o.txq))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--burst")) {
			if (!number<std::uint16_t>(*v, "--burst", 1, 512, o.burst))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--total-num-mbufs")) {
			if (!number(*v, "--total-num-mbufs", 1024u, 1u << 24, o.total_num_mbufs))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--txpkt-len")) {
			if (!number<std::uint16_t>(*v, "--txpkt-len", 60, 1500, o.txpkt_len))
				return std::nullopt;
		} else if (auto v = option(argc, argv, i, "--hca")) {
			if (*v != "uring" && *v != "verbs" && *v != "mlx5" && *v != "none") {
				fprintf(stderr, "mrpmd: --hca=%s: expected uring, verbs, mlx5 or none\n",
					v->c_str());
				return std::nullopt;
			}
			o.hca = *v;
		} else if (auto v = option(argc, argv, i, "--seconds")) {
			char *end = nullptr;
			o.seconds = std::strtod(v->c_str(), &end);
			if (v->empty() || *end || o.seconds <= 0) {
				fprintf(stderr, "mrpmd: --seconds=%s: expected a positive number\n",
					v->c_str());
				return std::nullopt;
			}
		} else if (arg == "--churn") {
			o.churn = true;
		} else if (arg == "-i" || arg == "--interactive") {
			o.interactive = true;
			o.auto_start = false;
		} else if (arg == "--no-generation-check") {
			o.no_generation_check = true;
		} else {
			fprintf(stderr, "mrpmd: unknown argument '%s' (mrpmd -- --help)\n", argv[i]);
			return std::nullopt;
		}
	}
	if (o.churn && o.hca == "none")
		fprintf(stderr, "mrpmd: note: --churn with --hca=none exercises resyncs but moves no "
				"data, so corruption cannot be seen\n");
	return o;
}

} // namespace mrpmd
