/* SPDX-License-Identifier: MIT */
/*
 * main() of the guest gtest binaries: without /dev/mrsync (the host, or a
 * guest where the module did not load) they exit 77, which meson and the
 * harness read as "skipped". A binary may define mrsync_vm_helper() to serve
 * a helper mode (a re-exec of itself) before gtest starts.
 */
#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

/** Returns an exit code to end with, or -1 to run the tests. */
__attribute__((weak)) int mrsync_vm_helper(int, char **)
{
	return -1;
}

int main(int argc, char **argv)
{
	int helper = mrsync_vm_helper(argc, argv);
	if (helper >= 0)
		return helper;
	if (access("/dev/mrsync", F_OK) != 0) {
		std::fprintf(stderr, "%s: skipped: no /dev/mrsync (the module is tested in the "
				     "QEMU guest: test/vm/run)\n", argv[0]);
		return 77;
	}
	testing::InitGoogleTest(&argc, argv);
	return RUN_ALL_TESTS();
}
