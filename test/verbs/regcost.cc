// Why the cache matters, on Soft-RoCE in the guest: ibv_reg_mr + dereg of
// 4 KiB .. 256 MiB against an mrsync hit and an mrsync resync of one page in
// a registration of that size. TCG makes every absolute time slow; read the
// ratios. Prints a table and, last, one JSON object.
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <infiniband/verbs.h>

#include <mrsync/mrsync.hpp>
#include <mrsync/verbs.h>

#include "../../apps/common/cli.hpp"
#include "rdma_loopback.hpp"

namespace {

using clk = std::chrono::steady_clock;
double ns_since(clk::time_point t)
{
	return std::chrono::duration<double, std::nano>(clk::now() - t).count();
}

struct Row {
	std::size_t bytes;
	double reg_ns, hit_ns, resync_ns;
};

} // namespace

int main(int argc, char **argv)
{
	bool quick = false;
	const mrsync::cli::Options opts{
		mrsync::cli::flag("quick", "4 KiB, 1 MiB and 16 MiB only, for CI", quick),
	};
	if (auto rc = mrsync::cli::parse({argv[0], "[--quick]"}, opts, argc, argv))
		return *rc;
	if (access("/dev/infiniband/uverbs0", F_OK) != 0 || access("/dev/mrsync", F_OK) != 0) {
		std::fprintf(stderr, "%s: skipped: needs Soft-RoCE and the module (test/vm/run --bench)\n",
			     argv[0]);
		return 77;
	}
	mrsync::test::Loopback rdma;
	if (!rdma.ok()) {
		std::fprintf(stderr, "regcost: %s\n", rdma.error().c_str());
		return 1;
	}
	mrsync_verbs_params vp = MRSYNC_VERBS_PARAMS_INIT;
	vp.pd = rdma.pd();
	vp.quiesce = &mrsync::test::Loopback::quiesce;
	vp.quiesce_arg = &rdma;
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "verbs";
	p.driver_arg = &vp;
	p.sources = MRSYNC_SOURCE_KMOD;
	p.max_registered_bytes = 0;
	auto ctx = mrsync::Context::create(p);
	if (!ctx) {
		std::fprintf(stderr, "regcost: %s\n", ctx.error().message.c_str());
		return 1;
	}
	std::vector<std::size_t> sizes = {4096, 64u << 10, 1u << 20, 16u << 20, 64u << 20, 256u << 20};
	if (quick)
		sizes = {4096, 1u << 20, 16u << 20};
	std::vector<Row> rows;
	std::printf("%12s %14s %12s %14s %12s %14s\n", "bytes", "ibv_reg_mr ns", "hit ns",
		    "resync 1pg ns", "reg/hit", "reg/resync");
	for (std::size_t bytes : sizes) {
		auto *buf = static_cast<char *>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
						     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		std::memset(buf, 1, bytes);
		const int reps = bytes >= (64u << 20) ? 2 : bytes >= (1u << 20) ? 5 : 50;
		auto t = clk::now();
		for (int i = 0; i < reps; ++i) {
			ibv_mr *mr = ibv_reg_mr(rdma.pd(), buf, bytes,
						IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
			if (!mr) {
				std::perror("ibv_reg_mr");
				return 1;
			}
			ibv_dereg_mr(mr);
		}
		const double reg = ns_since(t) / reps;
		if (!ctx->get(buf, bytes)) /* miss: registers */
			return 1;
		const int hits = 20000;
		t = clk::now();
		for (int i = 0; i < hits; ++i) {
			auto r = ctx->get(buf + (std::size_t(i) * 4096) % bytes, 64);
			if (!r)
				return 1;
		}
		const double hit = ns_since(t) / hits;
		const int resyncs = 3;
		double resync = 0;
		for (int i = 0; i < resyncs; ++i) {
			char *page = buf + ((i * 7 + 1) * 4096) % bytes;
			munmap(page, 4096);
			mmap(page, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			t = clk::now();
			if (!ctx->get(buf, bytes)) /* resync + re-register on rxe */
				return 1;
			resync += ns_since(t);
		}
		resync /= resyncs;
		rows.push_back({bytes, reg, hit, resync});
		std::printf("%12zu %14.0f %12.1f %14.0f %12.0f %14.2f\n", bytes, reg, hit, resync,
			    reg / hit, reg / resync);
		std::fflush(stdout);
		(void)mrsync_compact(ctx->c_handle());
		munmap(buf, bytes);
		(void)ctx->resync();
	}
	std::printf("{\"driver\":\"verbs\",\"device\":\"rxe0\",\"rows\":[");
	for (std::size_t i = 0; i < rows.size(); ++i)
		std::printf("%s{\"bytes\":%zu,\"ibv_reg_mr_ns\":%.0f,\"hit_ns\":%.1f,\"resync_1page_ns\":%.0f,"
			    "\"reg_over_hit\":%.0f,\"reg_over_resync\":%.2f}",
			    i ? "," : "", rows[i].bytes, rows[i].reg_ns, rows[i].hit_ns, rows[i].resync_ns,
			    rows[i].reg_ns / rows[i].hit_ns, rows[i].reg_ns / rows[i].resync_ns);
	std::printf("]}\n");
	return 0;
}
