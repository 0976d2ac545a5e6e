/* SPDX-License-Identifier: MIT */
#include "multiproc.hpp"

#include <cstdio>

#include <rte_eal.h>
#include <rte_ethdev.h>

namespace mrpmd {

bool is_secondary() { return rte_eal_process_type() == RTE_PROC_SECONDARY; }

bool find_primary_ports(App &app)
{
	/* The secondary's vdevs come from the primary (the EAL asks it over
	 * IPC), so no --vdev is given here. */
	app.nb_ports = rte_eth_dev_count_avail();
	if (!app.nb_ports) {
		fprintf(stderr, "mrpmd: secondary: the primary has no ports (or is not running with "
				"this --file-prefix)\n");
		return false;
	}
	app.pool = rte_mempool_lookup(kPoolName);
	if (!app.pool) {
		fprintf(stderr, "mrpmd: secondary: no mbuf pool '%s': start the primary mrpmd first\n",
			kPoolName);
		return false;
	}
	for (std::uint16_t port = 0; port < app.nb_ports; ++port) {
		rte_eth_dev_info info{};
		if (rte_eth_dev_info_get(port, &info) != 0 || info.nb_rx_queues != app.opt.rxq ||
		    info.nb_tx_queues != app.opt.txq) {
			fprintf(stderr, "mrpmd: secondary: port %u has %u RX / %u TX queues, --rxq=%u "
					"--txq=%u: give the primary's values\n",
				port, info.nb_rx_queues, info.nb_tx_queues, app.opt.rxq, app.opt.txq);
			return false;
		}
	}
	return true;
}

QueueShare rx_share(const Options &o)
{
	const auto n = std::uint16_t(o.rxq / o.num_procs);
	return {std::uint16_t(o.proc_id * n), n};
}

QueueShare tx_share(const Options &o)
{
	const auto n = std::uint16_t(o.txq / o.num_procs);
	return {std::uint16_t(o.proc_id * n), n};
}

} // namespace mrpmd
