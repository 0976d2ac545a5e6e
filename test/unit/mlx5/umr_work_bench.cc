/* SPDX-License-Identifier: MIT */
/* mlx5-umr-work: the UMR work of a one-page resync, for registrations of
 * 2 MiB .. 64 GiB, counted by the model (no memory is registered: the model
 * runs with no_memory). One JSON row per size:
 *   invalidate: the resync maps the page to the poison key;
 *   repin: the next lookup maps the page's new chunk MR;
 *   full_rewrite_klms: what rewriting the whole translation would post
 *   (the parent's and every child's list), the peer of the ratio.
 * The driver's production window (32 MiB, grown so a parent holds at most 52)
 * and chunk size (1 GiB, as the core pins in caps().max_backing_bytes units).
 *   mlx5-umr-work [--check]   --check: exit 1 unless a one-page resync is one
 *       UMR each way at every size, with at most one KLM (one 64-byte block)
 *       more than at 2 MiB. */
#include <cstdio>
#include <cstring>
#include <vector>

#include <mrsync/mrsync.h>

#include "mlx5_driver.hpp"
#include "mlx5_model.hpp"

namespace {

using namespace mrsync;
using namespace mrsync::mlx5;

struct Work {
	std::uint64_t umrs = 0, klms = 0, bytes = 0;
	friend bool operator==(const Work &, const Work &) = default;
};

Work delta(const DriverStats &a, const DriverStats &b)
{
	return {b.umrs - a.umrs, b.umr_klms - a.umr_klms, b.umr_bytes - a.umr_bytes};
}

} // namespace

int main(int argc, char **argv)
{
	const bool check = argc > 1 && std::strcmp(argv[1], "--check") == 0;
	const std::uint64_t base = 0x7f0000000000ull; /* never touched: nothing is pinned */
	const std::uint64_t page = 4096;
	std::vector<Work> invalidate, repin;
	for (std::uint64_t size = 2ull << 20; size <= 64ull << 30; size *= 2) {
		ModelOptions mo;
		mo.no_memory = true;
		auto model = Mlx5Model::create(mo);
		if (!model) {
			std::fprintf(stderr, "mlx5-umr-work: %s\n", model.error().message.c_str());
			return 1;
		}
		auto driver = Mlx5Driver::create(std::move(model).value());
		if (!driver) {
			std::fprintf(stderr, "mlx5-umr-work: %s\n", driver.error().message.c_str());
			return 1;
		}
		Mlx5Driver &d = **driver;
		const std::uint64_t chunk = d.caps().max_backing_bytes;
		std::vector<Extent> t;
		for (std::uint64_t off = 0; off < size; off += chunk) {
			auto b = d.pin(base + off, std::min(chunk, size - off));
			if (!b) {
				std::fprintf(stderr, "mlx5-umr-work: %s\n", b.error().message.c_str());
				return 1;
			}
			t.push_back({off, std::min(chunk, size - off), *b});
		}
		auto keys = d.create(base, size, MRSYNC_ACCESS_ALL, t);
		if (!keys) {
			std::fprintf(stderr, "mlx5-umr-work: %s\n", keys.error().message.c_str());
			return 1;
		}
		const DriverStats created = d.stats();
		/* One page in the middle of the registration changes. */
		const std::uint64_t at = size / 2 + 5 * page;
		std::vector<Extent> hole;
		for (const Extent &e : t) {
			if (at < e.offset || at >= e.offset + e.length) {
				hole.push_back(e);
				continue;
			}
			if (at > e.offset)
				hole.push_back({e.offset, at - e.offset, e.backing});
			hole.push_back({at, page, kNoBacking});
			if (at + page < e.offset + e.length)
				hole.push_back({at + page, e.offset + e.length - at - page, e.backing});
		}
		if (!d.map(*keys, hole) || !d.fence())
			return 1;
		const DriverStats invalidated = d.stats();
		auto fresh = d.pin(base + at, page);
		if (!fresh)
			return 1;
		for (Extent &e : hole)
			if (e.backing == kNoBacking)
				e.backing = *fresh;
		if (!d.map(*keys, hole) || !d.fence())
			return 1;
		const DriverStats repinned = d.stats();
		invalidate.push_back(delta(created, invalidated));
		repin.push_back(delta(invalidated, repinned));
		const std::uint64_t window = d.window_for(size);
		const std::uint64_t windows = (size + window - 1) / window;
		std::printf("{\"bench\":\"mlx5-umr-one-page-resync\",\"registration_bytes\":%llu,"
			    "\"window_bytes\":%llu,\"windows\":%llu,"
			    "\"invalidate\":{\"umrs\":%llu,\"klm_entries\":%llu,\"bytes_posted\":%llu},"
			    "\"repin\":{\"umrs\":%llu,\"klm_entries\":%llu,\"bytes_posted\":%llu},"
			    "\"full_rewrite_klms\":%llu}\n",
			    (unsigned long long)size, (unsigned long long)window,
			    (unsigned long long)windows, (unsigned long long)invalidate.back().umrs,
			    (unsigned long long)invalidate.back().klms,
			    (unsigned long long)invalidate.back().bytes,
			    (unsigned long long)repin.back().umrs, (unsigned long long)repin.back().klms,
			    (unsigned long long)repin.back().bytes,
			    (unsigned long long)created.umr_klms);
	}
	if (!check)
		return 0;
	/* Flat: one UMR each way at every size, and at most one more KLM
	 * (a window that holds two 1 GiB chunks) than the smallest size. */
	for (std::size_t i = 0; i < invalidate.size(); ++i)
		for (const Work *w : {&invalidate[i], &repin[i]})
			if (w->umrs != 1 || w->klms > invalidate[0].klms + 1 ||
			    w->bytes > invalidate[0].bytes + 64) {
				std::printf("mlx5-umr-work: the UMR work of a one-page resync grows "
					    "with the registration (size #%zu)\n", i);
				return 1;
			}
	std::printf("mlx5-umr-work: one-page resync work is flat from 2 MiB to 64 GiB\n");
	return 0;
}
