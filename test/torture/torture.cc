/* SPDX-License-Identifier: MIT */
/* mrsync-torture: the churn workload (apps/common/churn_workload.hpp) for a
 * million operations, every DMA write checked by content.
 *   mrsync-torture [--ops N] [--source auto|uffd|kmod] [--threads N]
 *       passes when no write was lost and nothing unexpected failed;
 *   mrsync-torture --negative-control ...
 *       runs with the generation check disabled and passes only when writes
 *       WERE lost: proof that the torture can fail.
 * Prints "torture: ops=N lost_writes=N ..." and a "1 passed, 0 failed" line. */
#include <cstdio>
#include <string>

#include <mrsync/mrsync.hpp>

#include "churn_workload.hpp"
#include "cli.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 1'000'000;
	std::uint32_t sources = 0, ring_entries = 0;
	bool negative = false;
	for (int i = 1; i < argc; ++i) {
		if (mrsync::workload::parse_option(argc, argv, i, options)) {
			continue;
		} else if (auto r = mrsync::cli::option(argc, argv, i, "--ring-entries");
			   r && mrsync::cli::count(*r)) {
			ring_entries = static_cast<std::uint32_t>(*mrsync::cli::count(*r));
		} else if (auto s = mrsync::cli::option(argc, argv, i, "--source");
			   s && mrsync::cli::source_mask(*s)) {
			sources = *mrsync::cli::source_mask(*s);
		} else if (std::string(argv[i]) == "--negative-control") {
			negative = true;
		} else {
			std::fprintf(stderr, "usage: mrsync-torture [--ops N] [--threads N] "
					     "[--source auto|uffd|kmod] [--ring-entries N] "
					     "[--negative-control]\n");
			return 2;
		}
	}
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "uring";
	params.sources = sources;
	params.ring_entries = ring_entries;
	params.flags = negative ? MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK : 0;
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
	return mrsync::workload::print_verdict("torture", *ctx, *report, negative);
}
