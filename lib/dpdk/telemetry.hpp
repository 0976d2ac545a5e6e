/* SPDX-License-Identifier: MIT */
/* DPDK telemetry: /mrsync/stats and /mrsync/regions. */
#ifndef MRSYNC_DPDK_TELEMETRY_HPP
#define MRSYNC_DPDK_TELEMETRY_HPP

struct mrsync_dpdk;

namespace mrsync::dpdk {

/* Points the commands at `md` (registered once per process: telemetry has
 * no unregister). */
void telemetry_attach(mrsync_dpdk *md);
/* The commands answer "not attached" from now on. */
void telemetry_detach();

} // namespace mrsync::dpdk

#endif
