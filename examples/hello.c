/* SPDX-License-Identifier: MIT */
/* The C API: a context on the default driver (the io_uring software HCA)
 * and event source, a registration of a malloc'd buffer, the cache hit on
 * the second lookup, and what the counters say. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mrsync/mrsync.h>

int main(void)
{
	struct mrsync_ctx *ctx = NULL;
	int rc = mrsync_ctx_create(NULL, &ctx); /* NULL: every default */
	if (rc < 0) {
		fprintf(stderr, "hello-c: mrsync_ctx_create: %s (%s)\n", mrsync_last_error(),
			strerror(-rc));
		return 1;
	}
	const size_t len = 1 << 20;
	char *buf = aligned_alloc(4096, len);
	memset(buf, 0, len);

	struct mrsync_reg reg;
	for (int i = 0; i < 2; ++i) {
		rc = mrsync_get(ctx, buf, len, MRSYNC_ACCESS_LOCAL_WRITE, &reg);
		if (rc < 0) {
			fprintf(stderr, "hello-c: mrsync_get: %s\n", mrsync_last_error());
			return 1;
		}
		printf("hello-c: [%p, +%zu) -> lkey %u rkey %u\n", (void *)buf, len, reg.lkey,
		       reg.rkey);
		mrsync_put(ctx, &reg);
	}
	struct mrsync_stats stats;
	mrsync_get_stats(ctx, &stats, sizeof stats);
	printf("hello-c: driver %s, %llu hit(s), %llu miss(es), %llu registration(s)\n",
	       mrsync_driver_name(ctx), (unsigned long long)stats.hits,
	       (unsigned long long)stats.misses, (unsigned long long)stats.registrations);
	mrsync_ctx_destroy(&ctx);
	free(buf);
	return stats.hits >= 1 ? 0 : 1;
}
