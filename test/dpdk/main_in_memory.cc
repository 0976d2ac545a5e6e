// The dynamic-memory suites: EAL --in-memory on real hugepages, one lcore.
#include "eal_fixture.hpp"

int main(int argc, char **argv)
{
	return mrsync::test::run_with_eal(
		argc, argv,
		{"--in-memory", "--no-pci", "-l", "0", "--log-level", "lib.eal:warning",
		 "--file-prefix", "mrsync-test-events"});
}
