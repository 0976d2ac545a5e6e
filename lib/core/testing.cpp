/* SPDX-License-Identifier: MIT */
/* The test-only entry point (mrsync/testing.h): linked into test programs
 * only, never into libmrsync.so. Its static initialiser permits the test-only
 * flags for the whole process before main() runs. */
#include <mrsync/testing.h>

namespace mrsync::detail {
extern bool test_flags_enabled; /* capi.cpp, constant-initialised to false */
}

namespace {
[[maybe_unused]] const bool enabled = (mrsync::detail::test_flags_enabled = true);
}
