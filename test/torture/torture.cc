/* SPDX-License-Identifier: MIT */
/* mrsync-torture: the churn workload (apps/common/churn_workload.hpp) for a
 * million operations, every DMA write checked by content.
 *   mrsync-torture [--ops N] [--source auto|uffd|kmod] [--threads N] [--stress N]
 *       passes when no write was lost, nothing unexpected failed, and
 *       lookups were refused with ENOTSUP only without the kernel module;
 *   mrsync-torture --long ...
 *       the same for 10^7 operations (by hand, not in CI);
 *   mrsync-torture --negative-control ...
 *       runs with the generation check disabled and passes only when writes
 *       WERE lost: proof that the torture can fail;
 *   mrsync-torture --unguarded ...
 *       runs with MRSYNC_CTX_F_TEST_UNGUARDED_PINS (pins without waiting for
 *       a change in progress, hints re-pin every invalid entry, sources take
 *       memory they cannot see) and passes only when writes WERE lost: the
 *       hinter's pins race MADV_DONTNEED (issue 9, race B).
 * Prints "torture: ops=N lost_writes=N ... seconds=S ops_per_s=N" and a
 * "1 passed, 0 failed" line. */
#include <cstdio>
#include <string>

#include <mrsync/mrsync.hpp>
#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */

#include "churn_workload.hpp"
#include "cli.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 1'000'000;
	std::uint32_t sources = 0, ring_entries = 0, flags = 0;
	bool long_run = false;
	for (int i = 1; i < argc; ++i) {
		const std::string arg = argv[i];
		if (mrsync::workload::parse_option(argc, argv, i, options)) {
			continue;
		} else if (auto r = mrsync::cli::option(argc, argv, i, "--ring-entries");
			   r && mrsync::cli::count(*r)) {
			ring_entries = static_cast<std::uint32_t>(*mrsync::cli::count(*r));
		} else if (auto s = mrsync::cli::option(argc, argv, i, "--source");
			   s && mrsync::cli::source_mask(*s)) {
			sources = *mrsync::cli::source_mask(*s);
		} else if (arg == "--negative-control") {
			flags |= MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK;
		} else if (arg == "--unguarded") {
			flags |= MRSYNC_CTX_F_TEST_UNGUARDED_PINS;
		} else if (arg == "--long") {
			long_run = true;
		} else {
			std::fprintf(stderr, "usage: mrsync-torture %s [--long] "
					     "[--source auto|uffd|kmod] [--ring-entries N] "
					     "[--negative-control | --unguarded]\n",
				     mrsync::workload::kOptionsUsage);
			return 2;
		}
	}
	if (long_run)
		options.ops = 10'000'000;
	options.sources = sources;
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "uring";
	params.sources = sources;
	params.ring_entries = ring_entries;
	params.flags = flags;
	auto ctx = mrsync::Context::create(params);
	if (!ctx) {
		std::fprintf(stderr, "torture: %s\n", ctx.error().message.c_str());
		return 1;
	}
	auto report = mrsync::workload::run(*ctx, options);
	if (!report) {
		std::fprintf(stderr, "torture: %s\n", report.error().message.c_str());
		return 1;
	}
	return mrsync::workload::print_verdict(long_run ? "torture (long)" : "torture", *ctx,
					       *report, flags != 0);
}
