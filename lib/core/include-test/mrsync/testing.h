/* SPDX-License-Identifier: MIT */
/**
 * @file
 * TEST ONLY, never installed: flags that switch off the guards of the cache,
 * so the tests of those guards can prove they fail without them.
 *
 * The entry point is the link: a program linked with the internal test
 * library (meson: mrsync_internal_dep, which links lib/core/testing.cpp)
 * may pass these flags to mrsync_ctx_create(); libmrsync.so, which users
 * link, refuses them with -EINVAL naming params->flags.
 */
#ifndef MRSYNC_TESTING_H
#define MRSYNC_TESTING_H

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif

/** TEST ONLY: pins without the guards that keep a pin current: no wait for
 *  a change in progress before pinning, hints and gets re-pin every invalid
 *  entry of the registrations they touch, and event sources accept memory
 *  whose changes they cannot see. */
#define MRSYNC_CTX_F_TEST_UNGUARDED_PINS (1u << 1)

/** TEST ONLY: a registration whose map the device refused is retired but
 *  its keys are not revoked on the device (the negative control of that
 *  revocation: the device keeps translating them to the replaced pages). */
#define MRSYNC_CTX_F_TEST_NO_REVOKE (1u << 2)

/** TEST ONLY: the context's sources keep no copy of a drain for the other
 *  clients (lib/core/source_hub.hpp): a change that the context's watcher
 *  (mrsync_ctx_watcher()) polls first never reaches the cache's resync, and
 *  one the cache resyncs first never reaches the watcher's callbacks -- the
 *  negative control of the fan-out (test/integration/shared_sources_test.cc). */
#define MRSYNC_CTX_F_TEST_NO_FANOUT (1u << 3)

/** Every test-only flag (mrsync_params.flags). */
#define MRSYNC_CTX_F_TEST_ONLY_MASK                                                    \
	(MRSYNC_CTX_F_TEST_UNGUARDED_PINS | MRSYNC_CTX_F_TEST_NO_REVOKE |              \
	 MRSYNC_CTX_F_TEST_NO_FANOUT)

/** TEST ONLY, a bit of mrsync_watcher_create()'s `sources`: no source
 *  signals mrsync_watcher_fd(), which then never polls readable (the
 *  negative control of the fd's tests). */
#define MRSYNC_WATCHER_F_TEST_NO_WAKEUP (1u << 31)

/** Whether this process may pass MRSYNC_CTX_F_TEST_ONLY_MASK flags: true
 *  once lib/core/testing.cpp is linked in. */
int mrsync_test_flags_enabled(void);

#ifdef __cplusplus
}
#endif

#endif
