/* SPDX-License-Identifier: MIT */
/* mlx5-torture: the core's churn workload (apps/common/churn_workload.hpp)
 * with model RDMA WRITEs as the DMA: peers write through the rkeys mrsync
 * hands out, packet by packet, into the model's leaves (io_uring fixed
 * buffers: real pinned pages), while a mutator remaps, madvises, mremaps and
 * punches the pages underneath and the driver rewrites child keys by UMR.
 * Passes with 0 lost writes, 0 key changes and no driver bug the model saw.
 *   mlx5-torture [--ops N] [--threads N] [--source auto|uffd|kmod] [--umr-faults N]
 *       [--pressure-klms N] [--no-poison-refusal]
 *       (--umr-faults: about one UMR in N fails; the driver must recover;
 *        --pressure-klms: a 4-page window is crowded at N KLMs, so the core
 *        re-pins runs under the churn, issue 12's entry pressure;
 *        --no-poison-refusal: the hardware would discard through a hole, so
 *        the driver keeps a key with a hole free: holes_ok = false)
 *   mlx5-torture --negative-control  (no generation check: passes only if
 *       writes WERE lost)
 * Ends with "1 passed, 0 failed" (or the reverse). */
#include <cstdio>

#include <mrsync/mrsync.hpp>
#include <mrsync/testing.h>

#include "churn_workload.hpp"
#include "cli_source.hpp"
#include "model_driver.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 20'000;
	std::uint32_t sources = 0, flags = 0;
	namespace cli = mrsync::cli;
	cli::Options opts = mrsync::workload::cli_options(options);
	opts.push_back(cli::source("event source (default auto)", "auto|uffd|kmod", sources));
	unsigned fault_one_in = 0;
	opts.push_back(cli::number("umr-faults", "fail about one UMR in N (0: none)", fault_one_in, 0,
				   1u << 30));
	unsigned pressure = 0;
	opts.push_back(cli::number("pressure-klms", "report a window crowded at N KLMs (0: the "
				   "driver's default, 40 of 52)", pressure, 0, 52));
	bool no_poison_refusal = false;
	opts.push_back(cli::flag("no-poison-refusal", "the model discards through a hole's poison "
				 "key, the driver runs its holes_ok=false fallback", no_poison_refusal));
	for (cli::Option &o : mrsync::workload::negative_control_options(flags))
		opts.push_back(std::move(o));
	if (auto rc = cli::parse({"mlx5-torture", "[options]"}, opts, argc, argv))
		return *rc;
	mrsync::mlx5::ModelDriverArg arg;
	/* Windows of 4 pages: each 16-page buffer spans 4 child keys, and no
	 * window can fragment past what one UMR holds. */
	arg.driver.min_window = 16 * 1024;
	arg.model.fault_one_in = fault_one_in;
	arg.driver.pressure_klms = pressure;
	arg.model.poison_refused = arg.driver.poison_refused = !no_poison_refusal;
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "mlx5-model";
	params.driver_arg = &arg;
	params.sources = sources;
	params.flags = flags;
	auto ctx = mrsync::Context::create(params);
	if (!ctx) {
		std::fprintf(stderr, "mlx5-torture: %s\n", ctx.error().message.c_str());
		return 1;
	}
	mrsync::mlx5::Mlx5Model &model = mrsync::mlx5::model_of(ctx->c_handle());
	options.hugepages = false; /* a hugepage buffer is 512 entries: more than a window holds */
	options.sources = sources;
	options.dma = [&](const mrsync::Registration &reg, std::uint64_t va,
			  std::span<const std::byte> bytes, std::uint64_t) -> mrsync::Result<int> {
		mrsync::mlx5::PeerQp qp;
		const int st = model.rdma_write(qp, reg.rkey(), va, bytes);
		/* A remote access error is the device refusing (an invalid entry). */
		return st == mrsync::mlx5::kWcSuccess ? int(bytes.size()) : -EACCES;
	};
	auto report = mrsync::workload::run(*ctx, options);
	if (!report) {
		std::fprintf(stderr, "mlx5-torture: %s\n", report.error().message.c_str());
		return 1;
	}
	const auto violations = model.violations();
	const auto stats = model.stats();
	const auto keys_changed = ctx->stats().key_changes;
	std::printf("mlx5-torture: umrs=%llu umr_klms=%llu umr_errors=%llu packets=%llu "
		    "packets_refused=%llu model_violations=%zu\n",
		    (unsigned long long)stats.umrs_posted, (unsigned long long)stats.umr_klms_posted,
		    (unsigned long long)stats.umr_errors, (unsigned long long)stats.packets,
		    (unsigned long long)stats.packets_refused, violations.size());
	std::printf("mlx5-torture: compactions=%llu (entry pressure at %u KLMs, 0: default)\n",
		    (unsigned long long)ctx->stats().compactions, pressure);
	for (std::size_t i = 0; i < violations.size() && i < 5; ++i)
		std::printf("mlx5-torture: model: %s\n", violations[i].c_str());
	const bool negative = flags != 0;
	if (!negative && (keys_changed || !violations.empty())) {
		std::printf("mlx5-torture: %llu key changes, %zu driver bugs seen by the model\n",
			    (unsigned long long)keys_changed, violations.size());
		std::printf("0 passed, 1 failed\n");
		return 1;
	}
	return mrsync::workload::print_verdict("mlx5-torture", *ctx, *report, negative);
}
