/* SPDX-License-Identifier: MIT */
/*
 * The vfio driver's resync against a whole-range remap, in the guest with
 * the IOMMU (test/vm/run --bench lists it as bench-vfio; --long as
 * vfio-bench). For a 64 MiB and a 1 GiB mapping of populated memory:
 *  - resync_us: one 4 KiB page replaced (mmap MAP_FIXED), mrsync_resync()
 *    (UNMAP_DMA of that entry: the fence) and the mrsync_get() that maps the
 *    new page at the same IOVA (MAP_DMA of one entry);
 *  - full_remap_us: what a cache without page-granular resync does, at its
 *    cheapest: UNMAP_DMA of the whole range and one MAP_DMA of it again
 *    (one coalesced mapping, as rte_vfio_container_dma_map makes);
 *  - ratio = full_remap_us / resync_us.
 * Medians; under TCG only the ratios mean anything. Prints one JSON object.
 * The edu device's group provides the container (no DMA is issued); the
 * kernel module is the event source. 1 GiB needs the container's
 * dma_entry_limit above 262144 (guest.sh loads vfio_iommu_type1 so).
 *   vfio_bench [--max-mib N]
 */
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mrsync/mrsync.hpp>
#include <mrsync/vfio.h>

#include "edu.hpp"
#include "vfio_container.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kPage = 4096;

double us_since(Clock::time_point t0)
{
	return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

struct Row {
	double map_all_us, resync_us, full_remap_us;
};

[[noreturn]] void fail(const std::string &what)
{
	std::fprintf(stderr, "vfio_bench: %s\n", what.c_str());
	std::exit(1);
}

Row measure(const std::string &device, std::uint64_t bytes)
{
	auto *buf = static_cast<std::byte *>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
						  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
	if (buf == MAP_FAILED)
		fail("mmap " + std::to_string(bytes));
	Row row{};
	std::uint64_t iova = 0;
	{
		mrsync_vfio_params vp = MRSYNC_VFIO_PARAMS_INIT;
		vp.device = device.c_str();
		mrsync_params p = mrsync::test::vfio_ctx_params(vp);
		p.compact_threshold = UINT64_MAX;
		auto ctx = mrsync::Context::create(p);
		if (!ctx)
			fail(ctx.error().message);
		auto t0 = Clock::now();
		auto whole = ctx->get(buf, bytes);
		if (!whole)
			fail(whole.error().message);
		row.map_all_us = us_since(t0);
		iova = mrsync::test::iova_of(*whole, reinterpret_cast<std::uint64_t>(buf));
		std::vector<double> samples;
		for (int i = 0; i < 9; ++i) {
			std::byte *page = buf + (bytes / 2 / kPage + i * 7) * kPage;
			if (mmap(page, kPage, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE, -1, 0) == MAP_FAILED)
				fail("mmap MAP_FIXED");
			t0 = Clock::now();
			if (auto ok = ctx->resync(); !ok)
				fail(ok.error().message);
			auto reg = ctx->get(page, kPage);
			samples.push_back(us_since(t0));
			if (!reg || mrsync::test::iova_of(*reg, reinterpret_cast<std::uint64_t>(page)) !=
					    iova + std::uint64_t(page - buf))
				fail("the page did not come back at its IOVA");
		}
		row.resync_us = median(samples);
	}
	/* The peer, on a container of its own (the group is free again). */
	auto c = mrsync::vfio::Container::open(device);
	if (!c)
		fail(c.error().message);
	const std::uint64_t base = 1ull << 32;
	if (auto ok = c->map(reinterpret_cast<std::uint64_t>(buf), base, bytes); !ok)
		fail(ok.error().message);
	std::vector<double> samples;
	for (int i = 0; i < 5; ++i) {
		const auto t0 = Clock::now();
		if (auto gone = c->unmap(base, bytes); !gone || *gone != bytes)
			fail("peer unmap");
		if (auto ok = c->map(reinterpret_cast<std::uint64_t>(buf), base, bytes); !ok)
			fail(ok.error().message);
		samples.push_back(us_since(t0));
	}
	row.full_remap_us = median(samples);
	(void)c->unmap(base, bytes);
	munmap(buf, bytes);
	return row;
}

} // namespace

int main(int argc, char **argv)
{
	std::uint64_t max_mib = 1024;
	for (int i = 1; i < argc; ++i)
		if (!std::strncmp(argv[i], "--max-mib=", 10))
			max_mib = std::strtoull(argv[i] + 10, nullptr, 0);
	auto device = mrsync::test::find_edu();
	if (!device) {
		std::fprintf(stderr, "vfio_bench: skipped: no edu device (QEMU guest only)\n");
		return std::getenv("MRSYNC_VM_GUEST") ? 1 : 77;
	}
	std::string json = "{\"vfio_resync_one_page\": {";
	const char *sep = "";
	for (std::uint64_t mib : {64ull, 1024ull}) {
		if (mib > max_mib)
			continue;
		const Row r = measure(*device, mib << 20);
		char line[320];
		std::snprintf(line, sizeof line,
			      "%s\"%lluMiB\": {\"mrsync_map_all_us\": %.0f, \"resync_us\": %.1f, "
			      "\"full_remap_us\": %.1f, \"ratio\": %.1f}",
			      sep, static_cast<unsigned long long>(mib), r.map_all_us, r.resync_us,
			      r.full_remap_us, r.full_remap_us / r.resync_us);
		json += line;
		sep = ", ";
	}
	json += "}}";
	std::printf("%s\n", json.c_str());
	return 0;
}
