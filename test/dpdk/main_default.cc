// The dynamic-memory suites again in the EAL's default mode: hugepage files
// on hugetlbfs (a private mount) under a --file-prefix, the multi-process
// capable mode, instead of --in-memory. The files are removed at exit.
#include <unistd.h>

#include <string>

#include "eal_fixture.hpp"
#include "hugetlbfs_mount.hpp"

int main(int argc, char **argv)
{
	static mrsync::test::HugetlbfsMount huge;
	if (huge.dir().empty()) {
		std::fprintf(stderr, "%s: skipped: cannot mount hugetlbfs (needs root)\n", argv[0]);
		return 77;
	}
	const std::string prefix = "mrsync-test-default-" + std::to_string(getpid());
	const int rc = mrsync::test::run_with_eal(
		argc, argv,
		{"--file-prefix", prefix.c_str(), "--huge-dir", huge.dir().c_str(), "--no-pci", "-l",
		 "0", "--log-level", "lib.eal:warning"});
	const int removed = mrsync::test::remove_eal_files(prefix, huge.dir());
	std::fprintf(stderr, "%s: removed %d EAL file(s) of --file-prefix %s\n", argv[0], removed,
		     prefix.c_str());
	return rc;
}
