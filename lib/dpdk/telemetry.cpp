/* SPDX-License-Identifier: MIT */
/* DPDK telemetry commands, readable with dpdk-telemetry.py:
 *   /mrsync/stats    a dict of the counters (lcore caches, EAL events, core)
 *   /mrsync/regions  a list of the live registrations, one string each */
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <mutex>

#include <rte_telemetry.h>

#include "dpdk_pvt.hpp"
#include "telemetry.hpp"

namespace mrsync::dpdk {
namespace {

std::mutex telemetry_mu; /* telemetry runs on its own thread */
mrsync_dpdk *current = nullptr;

int stats_cmd(const char *, const char *, struct rte_tel_data *d)
{
	std::lock_guard lock(telemetry_mu);
	if (!current)
		return -ENODEV;
	mrsync_dpdk_stats s;
	mrsync_stats core;
	if (mrsync_dpdk_get_stats(current, &s, sizeof s) < 0 ||
	    mrsync_get_stats(mrsync_dpdk_ctx(current), &core, sizeof core) < 0)
		return -EINVAL;
	rte_tel_data_start_dict(d);
	const struct {
		const char *name;
		std::uint64_t value;
	} rows[] = {
		{"lookups", s.lookups},
		{"lcore_hits", s.lcore_hits},
		{"lcore_misses", s.lcore_misses},
		{"lcore_flushes", s.lcore_flushes},
		{"mem_alloc_events", s.mem_alloc_events},
		{"mem_free_events", s.mem_free_events},
		{"freed_bytes", s.freed_bytes},
		{"hinted_runs", s.hinted_runs},
		{"memory_static", s.memory_static},
		{"hits", core.hits},
		{"misses", core.misses},
		{"resyncs", core.resyncs},
		{"full_resyncs", core.full_resyncs},
		{"events", core.events},
		{"entries_repinned", core.entries_repinned},
		{"bytes_repinned", core.bytes_repinned},
		{"entries_invalidated", core.entries_invalidated},
		{"regions", core.regions},
		{"registered_bytes", core.registered_bytes},
		{"pinned_bytes", core.pinned_bytes},
		{"stale_pinned_bytes", core.stale_pinned_bytes},
		{"invalid_bytes", core.invalid_bytes},
		{"registrations", core.registrations},
		{"evictions", core.evictions},
		{"compactions", core.compactions},
		{"key_changes", core.key_changes},
	};
	for (const auto &row : rows)
		rte_tel_data_add_dict_u64(d, row.name, row.value);
	rte_tel_data_add_dict_string(d, "driver", mrsync_driver_name(current->ctx));
	return 0;
}

int regions_cmd(const char *, const char *, struct rte_tel_data *d)
{
	std::lock_guard lock(telemetry_mu);
	if (!current)
		return -ENODEV;
	rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
	mrsync_for_each_region(
		current->ctx,
		[](void *arg, const mrsync_region_info *r) {
			char line[RTE_TEL_MAX_STRING_LEN];
			snprintf(line, sizeof(line),
				 "0x%" PRIx64 "+0x%" PRIx64 " lkey=0x%x rkey=0x%x invalid=%" PRIu64,
				 r->addr, r->length, r->lkey, r->rkey, r->invalid_bytes);
			rte_tel_data_add_array_string(static_cast<rte_tel_data *>(arg), line);
		},
		d);
	return 0;
}

} // namespace

void telemetry_attach(mrsync_dpdk *md)
{
	static std::once_flag registered;
	std::call_once(registered, [] {
		rte_telemetry_register_cmd("/mrsync/stats", stats_cmd,
					   "mrsync registration cache counters. No parameters");
		rte_telemetry_register_cmd("/mrsync/regions", regions_cmd,
					   "mrsync live registrations. No parameters");
	});
	std::lock_guard lock(telemetry_mu);
	current = md;
}

void telemetry_detach()
{
	std::lock_guard lock(telemetry_mu);
	current = nullptr;
}

} // namespace mrsync::dpdk
