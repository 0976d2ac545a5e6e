/* SPDX-License-Identifier: MIT */
/* mrsync-demo: the stale-registration bug and its fix, on this machine's real
 * kernel. DMA threads write through the io_uring software HCA into buffers
 * registered through mrsync while another thread unmaps, remaps, madvises,
 * mremaps, attaches shm over and punches memfd holes in them and a third keeps
 * hinting them (apps/common/churn_workload.hpp); every write is checked by
 * content. Then the same workload
 * runs through a naive address-keyed cache (mrsync with its generation check
 * switched off), which loses writes. The last two lines are for scripts:
 *   mrsync: ops=N lost_writes=N
 *   naive: ops=N lost_writes=N */
#include <cstdio>
#include <string>

#include <mrsync/mrsync.hpp>

#include "../common/churn_workload.hpp"
#include "../common/cli_source.hpp"

namespace {

mrsync::Result<mrsync::workload::Report> run(const char *label, std::uint32_t sources,
					     std::uint32_t flags, mrsync::workload::Options options)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "uring";
	params.sources = sources;
	params.flags = flags;
	options.sources = sources;
	auto ctx = mrsync::Context::create(params);
	if (!ctx)
		return std::move(ctx).error();
	options.progress = [&](const mrsync::workload::Report &r) {
		const mrsync_stats s = ctx->stats();
		std::fprintf(stderr,
			     "\r[%-6s] ops=%-8llu dma=%-8llu lost=%-6llu churn=%-6llu resyncs=%-6llu "
			     "repinned=%-7llu hits=%-9llu",
			     label, (unsigned long long)r.ops, (unsigned long long)r.dma_writes,
			     (unsigned long long)r.lost_writes, (unsigned long long)r.churn_ops,
			     (unsigned long long)s.resyncs, (unsigned long long)s.entries_repinned,
			     (unsigned long long)s.hits);
	};
	auto report = mrsync::workload::run(*ctx, options);
	std::fprintf(stderr, "\n");
	if (report) {
		const mrsync_stats s = ctx->stats();
		std::printf("  %-6s %s\n         resyncs=%llu full_resyncs=%llu entries_repinned=%llu "
			    "entries_invalidated=%llu hits=%llu misses=%llu (%.1f s)\n",
			    label, mrsync::workload::summary(*report).c_str(),
			    (unsigned long long)s.resyncs, (unsigned long long)s.full_resyncs,
			    (unsigned long long)s.entries_repinned,
			    (unsigned long long)s.entries_invalidated, (unsigned long long)s.hits,
			    (unsigned long long)s.misses, report->seconds);
	}
	return report;
}

} // namespace

int main(int argc, char **argv)
{
	mrsync::workload::Options options;
	options.ops = 200'000;
	std::uint32_t sources = 0;
	mrsync::cli::Options opts = mrsync::workload::cli_options(options);
	opts.push_back(mrsync::cli::source("event source of the mrsync run (default auto)",
					   "auto|uffd|kmod", sources));
	if (auto rc = mrsync::cli::parse({"mrsync-demo", "[options]",
					  "The workload runs twice: through mrsync, then through a "
					  "naive cache (default 200000 operations).\n"},
					 opts, argc, argv))
		return *rc;
	std::printf("mrsync-demo: %llu operations, %u DMA threads + 1 churn thread + 1 hint "
		    "thread, io_uring software HCA\n",
		    (unsigned long long)options.ops, options.dma_threads);
	auto fixed = run("mrsync", sources, 0, options);
	if (!fixed) {
		std::fprintf(stderr, "mrsync-demo: %s\n", fixed.error().message.c_str());
		return 1;
	}
	auto naive = run("naive", sources, MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK, options);
	if (!naive) {
		std::fprintf(stderr, "mrsync-demo: %s\n", naive.error().message.c_str());
		return 1;
	}
	if (fixed->errors)
		std::fprintf(stderr, "mrsync-demo: unexpected errors, first: %s\n",
			     fixed->first_error.c_str());
	std::printf("mrsync: ops=%llu lost_writes=%llu\n", (unsigned long long)fixed->ops,
		    (unsigned long long)fixed->lost_writes);
	std::printf("naive: ops=%llu lost_writes=%llu\n", (unsigned long long)naive->ops,
		    (unsigned long long)naive->lost_writes);
	return mrsync::workload::passed(*fixed, false) ? 0 : 1;
}
