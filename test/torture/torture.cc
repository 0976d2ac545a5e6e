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
#include "cli_source.hpp"

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 1'000'000;
	std::uint32_t sources = 0, ring_entries = 0, flags = 0;
	bool long_run = false;
	namespace cli = mrsync::cli;
	cli::Options opts = mrsync::workload::cli_options(options);
	opts.push_back(cli::source("event source (default auto)", "auto|uffd|kmod", sources));
	opts.push_back(cli::number("ring-entries", "entries of the event ring (0: default)",
				   ring_entries, 0, UINT32_MAX));
	for (cli::Option &o : mrsync::workload::negative_control_options(flags))
		opts.push_back(std::move(o));
	opts.push_back(cli::flag("long", "10^7 operations (by hand, not in CI)", long_run));
	if (auto rc = cli::parse({"mrsync-torture", "[options]"}, opts, argc, argv))
		return *rc;
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
