// The core's torture (apps/common/churn_workload), shortened, with real
// RDMA WRITEs on Soft-RoCE as the DMA: several threads write through keys
// from mrsync while another unmaps, remaps, madvises and mremaps the pages
// underneath them. Same verdict as mrsync-torture: 0 lost writes, and the
// negative control (--negative-control) must lose some.
//   verbs_torture [--ops N] [--threads N] [--source kmod|uffd] [--negative-control]
#include <unistd.h>

#include <cstdio>
#include <mutex>

#include <mrsync/mrsync.hpp>
#include <mrsync/verbs.h>

#include "churn_workload.hpp"
#include "cli.hpp"
#include "rdma_loopback.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 20'000;
	std::uint32_t sources = MRSYNC_SOURCE_KMOD;
	bool negative = false;
	for (int i = 1; i < argc; ++i) {
		if (mrsync::workload::parse_option(argc, argv, i, options))
			continue;
		if (auto s = mrsync::cli::option(argc, argv, i, "--source");
		    s && mrsync::cli::source_mask(*s) && *mrsync::cli::source_mask(*s)) {
			sources = *mrsync::cli::source_mask(*s);
		} else if (std::string(argv[i]) == "--negative-control") {
			negative = true;
		} else {
			std::fprintf(stderr, "usage: verbs_torture [--ops N] [--threads N] "
					     "[--source kmod|uffd] [--negative-control]\n");
			return 2;
		}
	}
	if (access("/dev/infiniband/uverbs0", F_OK) != 0) {
		std::fprintf(stderr, "verbs_torture: skipped: no RDMA device (QEMU guest only)\n");
		return std::getenv("MRSYNC_VM_GUEST") ? 1 : 77;
	}
	mrsync::test::Loopback rdma;
	if (!rdma.ok()) {
		std::fprintf(stderr, "verbs_torture: %s\n", rdma.error().c_str());
		return 1;
	}
	/* One QP, several posting threads: the lock serialises them, and the
	 * fence's quiesce takes it too (it never waits for the cache's lock
	 * while holding this one, so there is no cycle). */
	std::mutex qp_lock;
	struct Quiesce {
		mrsync::test::Loopback *rdma;
		std::mutex *lock;
	} q{&rdma, &qp_lock};
	mrsync_verbs_params vp = MRSYNC_VERBS_PARAMS_INIT;
	vp.pd = rdma.pd();
	vp.quiesce = [](void *arg) {
		auto *self = static_cast<Quiesce *>(arg);
		std::lock_guard lock(*self->lock);
		self->rdma->drain();
		return 0;
	};
	vp.quiesce_arg = &q;
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "verbs";
	params.driver_arg = &vp;
	params.sources = sources;
	params.flags = negative ? MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK : 0;
	auto ctx = mrsync::Context::create(params);
	if (!ctx) {
		std::fprintf(stderr, "verbs_torture: %s\n", ctx.error().message.c_str());
		return 1;
	}
	options.hugepages = false; /* the guest reserves none */
	options.dma = [&](const mrsync::Registration &reg, std::uint64_t va,
			  std::span<const std::byte> bytes, std::uint64_t) -> mrsync::Result<int> {
		std::lock_guard lock(qp_lock);
		std::vector<char> data(reinterpret_cast<const char *>(bytes.data()),
				       reinterpret_cast<const char *>(bytes.data()) + bytes.size());
		if (!rdma.post_write(reg.rkey(), reinterpret_cast<void *>(va), data))
			return mrsync::make_error(EIO, "ibv_post_send failed");
		/* A failed completion is the device refusing (a retired key). */
		return rdma.drain() == 0 ? int(bytes.size()) : -EACCES;
	};
	auto report = mrsync::workload::run(*ctx, options);
	if (!report) {
		std::fprintf(stderr, "verbs_torture: %s\n", report.error().message.c_str());
		return 1;
	}
	return mrsync::workload::print_verdict("verbs torture", *ctx, *report, negative);
}
