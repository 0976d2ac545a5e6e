/* SPDX-License-Identifier: MIT */
/* mrpmd: a testpmd-like forwarder whose every packet takes its key from the
 * mrsync registration cache (docs/mrpmd.md).
 *   mrpmd [EAL options] -- [--forward-mode=io ...] [--hca=uring] [--churn] [-i] */
#include <csignal>
#include <cstdio>
#include <thread>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include <mrsync/mrsync.hpp>

#include "app.hpp"
#include "churn.hpp"
#include "extbuf_vfio.hpp"
#include "multiproc.hpp"
#include "prompt.h"

namespace mrpmd {
namespace {

App *the_app = nullptr; /* for the prompt's commands and the signal handler */

void on_signal(int)
{
	if (the_app)
		the_app->quit.store(true);
}

int fail(const char *what, int rc = 1)
{
	fprintf(stderr, "mrpmd: %s\n", what);
	return rc;
}

/* Ports are paired 0<->1, 2<->3 (an odd last one forwards to itself). */
bool setup_ports(App &app)
{
	if (is_secondary()) /* the primary configured and started them */
		return find_primary_ports(app);
	app.nb_ports = rte_eth_dev_count_avail();
	if (!app.nb_ports) {
		fail("no ports: add vdevs, e.g. --vdev net_null0 --vdev net_null1");
		return false;
	}
	const int socket = int(rte_socket_id());
	app.pool = rte_pktmbuf_pool_create(kPoolName, app.opt.total_num_mbufs, 256, 0,
					   RTE_MBUF_DEFAULT_BUF_SIZE, socket);
	if (!app.pool) {
		fprintf(stderr, "mrpmd: --total-num-mbufs=%u: cannot create the pool: %s\n",
			app.opt.total_num_mbufs, rte_strerror(rte_errno));
		return false;
	}
	for (std::uint16_t port = 0; port < app.nb_ports; ++port) {
		rte_eth_conf conf{};
		int rc = rte_eth_dev_configure(port, app.opt.rxq, app.opt.txq, &conf);
		for (std::uint16_t q = 0; rc == 0 && q < app.opt.rxq; ++q)
			rc = rte_eth_rx_queue_setup(port, q, 1024, socket, nullptr, app.pool);
		for (std::uint16_t q = 0; rc == 0 && q < app.opt.txq; ++q)
			rc = rte_eth_tx_queue_setup(port, q, 1024, socket, nullptr);
		if (rc == 0)
			rc = rte_eth_dev_start(port);
		if (rc != 0) {
			fprintf(stderr, "mrpmd: port %u (--rxq=%u --txq=%u): %s\n", port, app.opt.rxq,
				app.opt.txq, rte_strerror(-rc));
			return false;
		}
		rte_eth_promiscuous_enable(port);
	}
	return true;
}

/* Streams (every port's RX queues) spread over the forwarding lcores. */
bool assign_streams(App &app)
{
	unsigned lcore;
	RTE_LCORE_FOREACH_WORKER(lcore)
	{
		if (app.fwd_lcores.size() < app.opt.nb_cores)
			app.fwd_lcores.push_back(lcore);
	}
	if (app.fwd_lcores.size() < app.opt.nb_cores) {
		fprintf(stderr, "mrpmd: --nb-cores=%u needs %u EAL lcores (main + forwarding), e.g. "
				"-l 0-%u\n", app.opt.nb_cores, app.opt.nb_cores + 1, app.opt.nb_cores);
		return false;
	}
	app.streams_of.resize(app.fwd_lcores.size());
	std::size_t next = 0;
	for (std::uint16_t port = 0; port < app.nb_ports; ++port) {
		const std::uint16_t peer =
			(port ^ 1) < app.nb_ports ? std::uint16_t(port ^ 1) : port;
		/* this process's share of the queues (all of them with one process) */
		const QueueShare rx = rx_share(app.opt), tx = tx_share(app.opt);
		for (std::uint16_t q = rx.first; q < rx.first + rx.count; ++q)
			app.streams_of[next++ % app.fwd_lcores.size()].push_back(
				{port, q, peer, std::uint16_t(tx.first + (q - rx.first) % tx.count)});
	}
	return true;
}

bool attach_cache(App &app)
{
	mrsync_dpdk_params p = MRSYNC_DPDK_PARAMS_INIT;
	p.driver = driver_for_hca(app.opt.hca);
	if (app.opt.no_generation_check)
		p.ctx_flags = MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK;
	if (mrsync_dpdk_attach(&p, &app.md) < 0) {
		fprintf(stderr, "mrpmd: --hca=%s: %s\n", app.opt.hca.c_str(), mrsync_dpdk_last_error());
		return false;
	}
	if (mrsync_dpdk_register_mempool(app.md, app.pool) < 0) {
		fprintf(stderr, "mrpmd: registering the mbuf pool: %s\n", mrsync_dpdk_last_error());
		return false;
	}
	if (app.opt.hca == "uring")
		app.hca = dynamic_cast<mrsync::uring::Hca *>(&mrsync::driver_of(mrsync_dpdk_ctx(app.md)));
	std::size_t size = rte_rcu_qsbr_get_memsize(RTE_MAX_LCORE);
	app.qsbr = static_cast<rte_rcu_qsbr *>(rte_zmalloc("mrpmd-qsbr", size, RTE_CACHE_LINE_SIZE));
	if (!app.qsbr || rte_rcu_qsbr_init(app.qsbr, RTE_MAX_LCORE) != 0)
		return fail("cannot set up the RCU quiescent-state variable"), false;
	for (unsigned lcore : app.fwd_lcores)
		rte_rcu_qsbr_thread_register(app.qsbr, lcore);
	return true;
}

/* Runs until --seconds elapse or SIGINT, printing stats every period. */
void run_for(App &app)
{
	using clock = std::chrono::steady_clock;
	const auto start = clock::now();
	auto next_stats = start + std::chrono::seconds(app.opt.stats_period);
	while (!app.quit.load()) {
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
		const auto now = clock::now();
		if (app.opt.seconds > 0 &&
		    std::chrono::duration<double>(now - start).count() >= app.opt.seconds)
			break;
		if (app.opt.stats_period && now >= next_stats) {
			print_port_stats(app);
			print_mrsync_stats(app);
			next_stats += std::chrono::seconds(app.opt.stats_period);
		}
	}
}

void teardown(App &app)
{
	stop_forwarding(app);
	if (app.churn)
		app.churn->stop();
	delete app.churn;
	app.churn = nullptr;
	const bool owner = !is_secondary(); /* a secondary leaves the primary's ports and pool */
	for (std::uint16_t port = 0; owner && port < app.nb_ports; ++port) {
		rte_eth_dev_stop(port);
		rte_eth_dev_close(port);
	}
	/* after the ports: closing them frees the mbufs still holding its buffers */
	delete app.extbuf;
	app.extbuf = nullptr;
	mrsync_dpdk_detach(&app.md);
	rte_free(app.qsbr);
	if (owner)
		rte_mempool_free(app.pool);
}

} // namespace
} // namespace mrpmd

using namespace mrpmd;

extern "C" {
void mrpmd_cmd_start(void)
{
	start_forwarding(*the_app);
	printf("  forwarding started (%s, %zu lcore(s), %u port(s))\n",
	       fwd_mode_name(the_app->mode.load()), the_app->fwd_lcores.size(), the_app->nb_ports);
}
void mrpmd_cmd_stop(void)
{
	if (!the_app->forwarding.load()) {
		printf("  not forwarding\n");
		return;
	}
	stop_forwarding(*the_app);
	print_final_stats(*the_app);
}
void mrpmd_cmd_show_port_stats(void) { print_port_stats(*the_app); }
void mrpmd_cmd_show_mrsync_stats(void) { print_mrsync_stats(*the_app); }
void mrpmd_cmd_show_fwd_stats(void) { print_fwd_stats(*the_app); }
void mrpmd_cmd_clear_port_stats(void)
{
	reset_rate_window(*the_app);
	for (std::uint16_t p = 0; p < the_app->nb_ports; ++p)
		printf("\n  NIC statistics for port %u cleared\n", p);
}
int mrpmd_cmd_set_fwd(const char *mode)
{
	/* testpmd's rule: the engine changes only while stopped, so a final
	 * report's mode is the one every packet of the run went through */
	if (the_app->forwarding.load()) {
		printf("  Please stop forwarding first\n");
		return -1;
	}
	auto m = parse_fwd_mode(mode);
	if (!m) {
		printf("  unknown forwarding mode '%s'\n", mode);
		return -1;
	}
	the_app->mode.store(*m);
	printf("  set fwd %s\n", fwd_mode_name(*m));
	return 0;
}
void mrpmd_cmd_quit(void) { the_app->quit.store(true); }
}

int main(int argc, char **argv)
{
	setvbuf(stdout, nullptr, _IOLBF, 0); /* stats interleave with the prompt's echo */
	const int consumed = rte_eal_init(argc, argv);
	if (consumed < 0) {
		fprintf(stderr, "mrpmd: EAL arguments rejected: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	static App app;
	if (auto exit_code = parse_options(argc - consumed, argv + consumed, app.opt)) {
		rte_eal_cleanup();
		return *exit_code;
	}
	app.mode.store(app.opt.mode);
	the_app = &app;
	/* No SA_RESTART: the prompt's read() returns, so SIGINT also ends -i. */
	struct sigaction sa {};
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, nullptr);
	sigaction(SIGTERM, &sa, nullptr);

	int rc = 0;
	if (!setup_ports(app) || !assign_streams(app) || !attach_cache(app)) {
		rc = 1;
	} else if (app.opt.churn && app.opt.hca != "none" &&
		   !(app.churn = new Churn(app))->init()) {
		rc = 1;
	} else if (!app.opt.extbuf.empty() &&
		   !(app.extbuf = new ExtbufArea(extbuf_mode(app.opt.extbuf)))->init()) {
		rc = 1;
	} else {
		if (app.churn)
			app.churn->start();
		if (app.extbuf && app.opt.churn)
			app.extbuf->start_churn();
		printf("mrpmd: %u port(s), %zu forwarding lcore(s), mode %s, hca %s (driver %s)%s, "
		       "%s process, queues %u/%u\n",
		       app.nb_ports, app.fwd_lcores.size(), fwd_mode_name(app.mode.load()),
		       app.opt.hca.c_str(), mrsync_driver_name(mrsync_dpdk_ctx(app.md)),
		       app.opt.churn ? ", churn on" : "", is_secondary() ? "secondary" : "primary",
		       app.opt.proc_id, app.opt.num_procs);
		if (app.opt.interactive) {
			mrpmd_prompt_run();
		} else {
			start_forwarding(app);
			run_for(app);
		}
		if (app.forwarding.load()) {
			stop_forwarding(app);
			print_final_stats(app);
		}
		if (const std::uint64_t bad = corrupted_packets(app)) {
			fprintf(stderr, "mrpmd: %llu corrupted packet(s)\n", (unsigned long long)bad);
			rc = 1;
		}
	}
	teardown(app);
	rte_eal_cleanup();
	return rc;
}
