/* SPDX-License-Identifier: MIT */
/* mrsync-bench: one lookup of the workload, shared by the C++ rows and the
 * C UCX peer. */
#ifndef MRSYNC_BENCH_ACCESS_H
#define MRSYNC_BENCH_ACCESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A lookup: [addr, addr + len) inside one registered region. */
struct bench_access {
	const void *addr;
	uint64_t len;
};

#ifdef __cplusplus
}
#endif

#endif
