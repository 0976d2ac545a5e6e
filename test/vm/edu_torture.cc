/* SPDX-License-Identifier: MIT */
// The core's torture (apps/common/churn_workload) with QEMU's edu device as
// the DMA, through the vfio driver and the guest's IOMMU: each write is two
// real DMAs (staging page -> device buffer -> the IOVA mrsync hands out),
// ~200 ms of virtual time, so the run is small: 4 anonymous and 2 memfd
// buffers of 4 pages, one DMA thread, no wide writes (edu moves at most 4095
// bytes). The mutator unmaps, remaps, madvises, mremaps, attaches shm over
// and punches holes in pages between the writes, the hinter hints whole
// buffers. Verdict as mrsync-torture: 0 lost writes; --negative-control (no
// generation check: a naive IOVA cache) must lose some.
//   edu_torture [--ops N] [--seed N] [--negative-control] [--stop-at-loss]
// Built a second time as mlx5_vfio_torture (MRSYNC_EDU_TORTURE_MLX5_VFIO):
// the same run through drivers/mlx5's VFIO mode, each write going through the
// registration's MTT mkey (the model's: key + address -> IOVA) before edu
// DMAs it; its negative control --skip-iommu-rewrite leaves the IOMMU as it
// was on every resync (the key stays): writes must be lost.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include <mrsync/mrsync.hpp>
#include <mrsync/vfio.h>

#include "churn_workload.hpp"
#include "edu.hpp"
#ifdef MRSYNC_EDU_TORTURE_MLX5_VFIO
#include "vfio_model_driver.hpp"
#endif

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 150;
	options.buffers = 4;
	options.memfd_buffers = 2;
	options.pages_per_buffer = 4;
	options.dma_threads = 1;
	options.churn_percent = 25;
	std::uint32_t flags = 0;
	namespace cli = mrsync::cli;
	cli::Options opts = mrsync::workload::cli_options(options);
	for (cli::Option &o : mrsync::workload::negative_control_options(flags))
		opts.push_back(std::move(o));
#ifdef MRSYNC_EDU_TORTURE_MLX5_VFIO
	bool skip_iommu_rewrite = false;
	opts.push_back({"skip-iommu-rewrite", nullptr,
			"VfioModeOptions::test_skip_iommu_rewrite: passes only if writes are lost",
			[&](const char *) -> std::optional<std::string> {
				skip_iommu_rewrite = true;
				return std::nullopt;
			}});
#endif
	if (auto rc = cli::parse({"edu_torture", "[options]"}, opts, argc, argv))
		return *rc;
	auto edu = mrsync::test::Edu::open();
	if (!edu) {
		const bool guest = std::getenv("MRSYNC_VM_GUEST");
		std::fprintf(stderr, "edu_torture: %s: %s\n", guest ? "failed" : "skipped",
			     edu.error().message.c_str());
		return guest ? 1 : 77;
	}
	const mrsync_vfio_params vp = edu->vfio_params();
	mrsync_params params = mrsync::test::vfio_ctx_params(vp, flags);
#ifdef MRSYNC_EDU_TORTURE_MLX5_VFIO
	mrsync::mlx5::VfioModelArg vfio_mode;
	vfio_mode.iommu = vp;
	vfio_mode.dma = [&edu](std::uint64_t iova, std::span<const std::byte> bytes) {
		return edu->write(iova, bytes);
	};
	vfio_mode.mode.test_skip_iommu_rewrite = skip_iommu_rewrite;
	params.driver = "mlx5-vfio-model";
	params.driver_arg = &vfio_mode;
#endif
	auto ctx = mrsync::Context::create(params);
	if (!ctx) {
		std::fprintf(stderr, "edu_torture: %s\n", ctx.error().message.c_str());
		return 1;
	}
	options.hugepages = false; /* the IOVA window is 256 MiB; 4 KiB pages suffice */
	options.wide_percent = 0;
	options.sources = MRSYNC_SOURCE_KMOD;
	std::mutex device; /* one DMA engine */
	options.dma = [&](const mrsync::Registration &reg, std::uint64_t va,
			  std::span<const std::byte> bytes, std::uint64_t) -> mrsync::Result<int> {
		std::lock_guard lock(device);
		/* A DMA the IOMMU refuses completes too; the DMAR fault it
		 * logs is how the device says "refused" (QEMU may compress a
		 * burst of faults into one: an unlogged refusal counts as a
		 * lost write, never the other way round). */
		const std::size_t faults = mrsync::test::dmar_faults();
#ifdef MRSYNC_EDU_TORTURE_MLX5_VFIO
		/* key + address through the MTT mkey, whose IOVAs never move */
		auto &model = mrsync::mlx5::mtt_model_of(ctx->c_handle());
		auto at = model.translate(reg.lkey(), va);
		const std::uint64_t iova = at ? *at : 0; /* for the message below */
		if (auto ok = model.write(reg.lkey(), va, bytes); !ok) {
			if (ok.error().code == EACCES) /* refused by the mkey: nothing moved */
				return -EACCES;
			return std::move(ok).error();
		}
#else
		const std::uint64_t iova = mrsync::test::iova_of(reg, va);
		if (auto ok = edu->write(iova, bytes); !ok)
			return std::move(ok).error();
#endif
		if (mrsync::test::dmar_faults() == faults)
			return int(bytes.size());
		std::fprintf(stderr, "edu_torture: DMA to iova 0x%llx (va 0x%llx of [0x%llx, +0x%llx)) "
			     "refused by the IOMMU\n", (unsigned long long)iova,
			     (unsigned long long)va, (unsigned long long)reg.addr(),
			     (unsigned long long)reg.length());
		return -EACCES;
	};
	auto report = mrsync::workload::run(*ctx, options);
	if (!report) {
		std::fprintf(stderr, "edu_torture: %s\n", report.error().message.c_str());
		return 1;
	}
#ifdef MRSYNC_EDU_TORTURE_MLX5_VFIO
	return mrsync::workload::print_verdict("mlx5-vfio edu torture", *ctx, *report,
					       flags != 0 || skip_iommu_rewrite);
#else
	return mrsync::workload::print_verdict("edu torture", *ctx, *report, flags != 0);
#endif
}
