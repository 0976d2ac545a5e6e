// main() of the stale programs: their own options, then gtest's.
//   --source=uffd|kmod   the event source (default uffd; kmod is the guest's)
//   --hugepages          SysV and file memory on 2 MiB pages
//   --iterations=N       changes per case (default: the test's, sized for CI)
//   --seconds=S          class B: how long the race runs
//   --stress             class B: add CPU-burning threads
// With --source=kmod and no /dev/mrsync the program exits 77 (skipped) on the
// host and fails in the guest (MRSYNC_VM_GUEST), where the module must be there.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cli_source.hpp"
#include "stale.hpp"

namespace mrsync::test::stale {
Options &options()
{
	static Options o;
	return o;
}
} // namespace mrsync::test::stale

int main(int argc, char **argv)
{
	using namespace mrsync;
	auto &o = test::stale::options();
	/* gtest's own options go to gtest, the rest to ours */
	std::vector<char *> ours{argv[0]}, rest{argv[0]};
	for (int i = 1; i < argc; ++i)
		(std::string_view(argv[i]).starts_with("--gtest_") ? rest : ours).push_back(argv[i]);
	const cli::Options opts{
		cli::source("the event source (default uffd; kmod is the guest's)", "uffd|kmod",
			    o.source),
		cli::flag("hugepages", "SysV and file memory on 2 MiB pages", o.hugepages),
		cli::number("iterations", "changes per case (default: the test's, sized for CI)",
			    o.iterations, 1, UINT64_MAX),
		cli::positive("seconds", "S", "class B: how long the race runs", o.seconds),
		cli::flag("stress", "class B: add CPU-burning threads", o.stress),
	};
	if (auto rc = cli::parse({argv[0], "[options] [--gtest_...]"}, opts, int(ours.size()),
				 ours.data()))
		return *rc;
	if (o.source == MRSYNC_SOURCE_KMOD && access("/dev/mrsync", F_OK) != 0) {
		const bool guest = std::getenv("MRSYNC_VM_GUEST") != nullptr;
		std::fprintf(stderr, "%s: %s: --source=kmod and no /dev/mrsync\n", argv[0],
			     guest ? "FAILED" : "skipped");
		return guest ? 1 : 77;
	}
	int n = static_cast<int>(rest.size());
	rest.push_back(nullptr);
	testing::InitGoogleTest(&n, rest.data());
	return RUN_ALL_TESTS();
}
