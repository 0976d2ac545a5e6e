// The static-memory suite: --no-huge, the EAL gives no memory events.
#include "eal_fixture.hpp"

int main(int argc, char **argv)
{
	return mrsync::test::run_with_eal(
		argc, argv,
		{"--no-huge", "-m", "64", "--no-pci", "-l", "0", "--log-level", "lib.eal:warning",
		 "--file-prefix", "mrsync-test-static"});
}
