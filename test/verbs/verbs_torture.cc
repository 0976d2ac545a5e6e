// The core's torture (apps/common/churn_workload), shortened, with real
// RDMA WRITEs on Soft-RoCE as the DMA: several threads write through keys
// from mrsync (some writes spanning several pages) while a mutator unmaps,
// remaps, madvises, mremaps, attaches shm over and punches memfd holes in the
// pages underneath them, and a hinter keeps hinting whole buffers. Same
// verdict as mrsync-torture: 0 lost writes, ENOTSUP refusals only with
// userfaultfd; the negative controls (--negative-control: no generation
// check; --unguarded: MRSYNC_CTX_F_TEST_UNGUARDED_PINS) must lose some.
// --stress N adds N CPU-burning threads (issue 9, class D: writes were lost
// with userfaultfd on a loaded machine).
//   verbs_torture [--ops N] [--threads N] [--stress N] [--source kmod|uffd]
//                 [--negative-control | --unguarded]
#include <unistd.h>

#include <cstdio>
#include <mutex>

#include <mrsync/mrsync.hpp>
#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */
#include <mrsync/verbs.h>

#include "churn_workload.hpp"
#include "cli_source.hpp"
#include "rdma_loopback.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 20'000;
	std::uint32_t sources = MRSYNC_SOURCE_KMOD, flags = 0;
	namespace cli = mrsync::cli;
	cli::Options opts = mrsync::workload::cli_options(options);
	opts.push_back(cli::source("event source (default kmod)", "kmod|uffd", sources));
	for (cli::Option &o : mrsync::workload::negative_control_options(flags))
		opts.push_back(std::move(o));
	if (auto rc = cli::parse({"verbs_torture", "[options]"}, opts, argc, argv))
		return *rc;
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
	params.flags = flags;
	auto ctx = mrsync::Context::create(params);
	if (!ctx) {
		std::fprintf(stderr, "verbs_torture: %s\n", ctx.error().message.c_str());
		return 1;
	}
	options.hugepages = false; /* Soft-RoCE over 4 KiB pages is what we test */
	options.sources = sources;
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
	return mrsync::workload::print_verdict("verbs torture", *ctx, *report, flags != 0);
}
