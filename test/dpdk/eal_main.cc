// main() of the DPDK suites: the EAL can start once per process.
#include <gtest/gtest.h>

#include <rte_eal.h>

#include "eal_fixture.hpp"

namespace mrsync::test {

int run_with_eal(int argc, char **argv, std::vector<const char *> eal_args)
{
	::testing::InitGoogleTest(&argc, argv);
	eal_args.insert(eal_args.begin(), argv[0]);
	std::vector<char *> args;
	for (const char *a : eal_args)
		args.push_back(const_cast<char *>(a));
	if (rte_eal_init(int(args.size()), args.data()) < 0) {
		fprintf(stderr, "rte_eal_init failed: hugepages reserved? (scripts/install-deps)\n");
		return 1;
	}
	const int rc = RUN_ALL_TESTS();
	rte_eal_cleanup();
	return rc;
}

} // namespace mrsync::test
