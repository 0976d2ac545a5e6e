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
#include <vector>

#include "cli.hpp"
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
	std::vector<char *> rest{argv[0]};
	for (int i = 1; i < argc; ++i) {
		const std::string arg = argv[i];
		if (auto v = cli::option(argc, argv, i, "--source")) {
			if (*v != "uffd" && *v != "kmod") {
				std::fprintf(stderr, "%s: --source is uffd or kmod, not %s\n", argv[0],
					     v->c_str());
				return 2;
			}
			o.source = *cli::source_mask(*v);
		} else if (auto n = cli::option(argc, argv, i, "--iterations")) {
			if (!cli::count(*n) || !*cli::count(*n)) {
				std::fprintf(stderr, "%s: bad --iterations %s\n", argv[0], n->c_str());
				return 2;
			}
			o.iterations = *cli::count(*n);
		} else if (auto s = cli::option(argc, argv, i, "--seconds")) {
			o.seconds = std::atof(s->c_str());
			if (o.seconds <= 0) {
				std::fprintf(stderr, "%s: bad --seconds %s\n", argv[0], s->c_str());
				return 2;
			}
		} else if (arg == "--hugepages") {
			o.hugepages = true;
		} else if (arg == "--stress") {
			o.stress = true;
		} else if (arg.rfind("--gtest_", 0) == 0) {
			rest.push_back(argv[i]);
		} else {
			std::fprintf(stderr, "usage: %s [--source=uffd|kmod] [--hugepages] "
					     "[--iterations=N] [--seconds=S] [--stress] [--gtest_...]\n",
				     argv[0]);
			return 2;
		}
	}
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
