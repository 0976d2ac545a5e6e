/* SPDX-License-Identifier: MIT */
/* mrpmd in a DPDK secondary process (--proc-type=secondary), testpmd's way:
 * the primary owns the ports and the mbuf pool, a secondary finds them and
 * forwards on the share of queues --num-procs/--proc-id give it. */
#ifndef MRPMD_MULTIPROC_HPP
#define MRPMD_MULTIPROC_HPP

#include "app.hpp"

namespace mrpmd {

/** The pool's name, shared by the primary (creates) and secondaries (look up). */
inline constexpr const char *kPoolName = "mrpmd_mbuf_pool";

/** True in a DPDK secondary process. */
bool is_secondary();

/** In a secondary: finds the primary's ports (already configured and
 *  started: none is touched) and its mbuf pool; errors name the cause. */
bool find_primary_ports(App &app);

/** The first of this process's RX (or TX) queues of a port, and how many. */
struct QueueShare {
	std::uint16_t first, count;
};
QueueShare rx_share(const Options &o);
QueueShare tx_share(const Options &o);

} // namespace mrpmd

#endif
