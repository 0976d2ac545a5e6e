// --socket-mem: 32 MiB preallocated (never freed by the EAL), more on demand.
#include "eal_fixture.hpp"
#include "hugetlbfs_mount.hpp"

int main(int argc, char **argv)
{
	static mrsync::test::HugetlbfsMount huge;
	if (huge.dir().empty()) {
		std::fprintf(stderr, "%s: skipped: cannot mount hugetlbfs (needs root)\n", argv[0]);
		return 77;
	}
	return mrsync::test::run_with_eal(
		argc, argv,
		{"--socket-mem", "32", "--huge-dir", huge.dir().c_str(), "--huge-unlink", "--no-pci",
		 "-l", "0", "--log-level", "lib.eal:warning", "--file-prefix",
		 "mrsync-test-socket-mem"});
}
