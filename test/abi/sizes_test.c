/* SPDX-License-Identifier: MIT */
/* The struct_size rule and the error channel of the C ABI (mrsync.h,
 * "Structs and their sizes", "Errors"), as a C program built against
 * libmrsync.so like a user's: params and stats from an older (smaller) and a
 * newer (larger) header, too small or NULL ones, the 0.1 stats call kept for
 * old binaries, and the test-only flag refused. The null driver and the
 * manual source: no device, no kernel feature needed. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mrsync/mrsync.h>
#ifdef MRSYNC_TEST_VERBS
#include <mrsync/verbs.h>
#endif

static int failures;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			failures++;                                            \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			printf(__VA_ARGS__);                                   \
			printf(" (last error: %s)\n", mrsync_last_error());    \
		}                                                              \
	} while (0)

/* `size` bytes that end where an inaccessible page begins: a library that
 * reads or writes past the size the caller gave faults. */
static void *at_page_end(size_t size)
{
	const long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || mprotect(p + page, page, PROT_NONE) != 0) {
		perror("mmap");
		_exit(1);
	}
	return p + page - size;
}

static struct mrsync_params null_params(void)
{
	struct mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "null";
	p.sources = MRSYNC_SOURCE_MANUAL;
	return p;
}

static int has(const char *needle)
{
	return strstr(mrsync_last_error(), needle) != NULL;
}

/* A 0.1-or-older caller: its struct ends after `flags`. */
static void old_params_accepted(void)
{
	const size_t old = offsetof(struct mrsync_params, flags) + sizeof(uint32_t);
	struct mrsync_params full = null_params();
	full.struct_size = (uint32_t)old;
	void *p = at_page_end(old);
	memcpy(p, &full, old);
	struct mrsync_ctx *ctx = NULL;
	int rc = mrsync_ctx_create(p, &ctx);
	CHECK(rc == 0 && ctx, "a %zu-byte params was refused: %d", old, rc);
	mrsync_ctx_destroy(&ctx);

	/* the smallest one: struct_size and sources, the rest defaults */
	struct { uint32_t struct_size, sources; } tiny = {8, MRSYNC_SOURCE_MANUAL};
	rc = mrsync_ctx_create((const struct mrsync_params *)&tiny, &ctx);
	CHECK(rc == 0 || rc == -ENODEV, "an 8-byte params was refused: %d", rc);
	mrsync_ctx_destroy(&ctx);
}

/* A newer caller: fields this library does not know must be zero. */
static void newer_params(void)
{
	struct {
		struct mrsync_params p;
		uint64_t future;
	} big = {null_params(), 0};
	big.p.struct_size = sizeof big;
	struct mrsync_ctx *ctx = NULL;
	CHECK(mrsync_ctx_create(&big.p, &ctx) == 0, "a larger params with a zero tail was refused");
	mrsync_ctx_destroy(&ctx);
	big.future = 1;
	CHECK(mrsync_ctx_create(&big.p, &ctx) == -EINVAL && !ctx, "an unknown field set was accepted");
	CHECK(has("params->struct_size"), "the message does not name params->struct_size");
}

static void bad_params(void)
{
	struct mrsync_params p = null_params();
	struct mrsync_ctx *ctx = NULL;
	p.struct_size = 4;
	CHECK(mrsync_ctx_create(&p, &ctx) == -EINVAL && !ctx, "struct_size 4 was accepted");
	CHECK(has("params->struct_size"), "the message does not name params->struct_size");
	p.struct_size = 0;
	CHECK(mrsync_ctx_create(&p, &ctx) == -EINVAL, "struct_size 0 was accepted");
	CHECK(mrsync_ctx_create(&p, NULL) == -EINVAL && has("out"), "out NULL was accepted");

	/* the test-only flag (mrsync/testing.h) is not part of the public ABI */
	p = null_params();
	p.flags = 1u << 1;
	CHECK(mrsync_ctx_create(&p, &ctx) == -EINVAL && !ctx, "the test-only flag was accepted");
	CHECK(has("params->flags"), "the message does not name params->flags");
}

static void stats_sizes(struct mrsync_ctx *ctx)
{
	/* an older, smaller struct: nothing written past it */
	const size_t old = offsetof(struct mrsync_stats, key_changes);
	struct mrsync_stats *s = at_page_end(old);
	memset(s, 0xaa, old);
	CHECK(mrsync_get_stats(ctx, s, old) == 0, "a %zu-byte stats was refused", old);
	CHECK(s->regions == 0 && s->evictions == 0, "an older stats was not filled");

	/* a newer, larger one: the tail this library does not know is zeroed */
	struct {
		struct mrsync_stats s;
		uint64_t future[2];
	} big;
	memset(&big, 0xaa, sizeof big);
	CHECK(mrsync_get_stats(ctx, &big.s, sizeof big) == 0, "a larger stats was refused");
	CHECK(big.future[0] == 0 && big.future[1] == 0, "the unknown tail was not zeroed");
	CHECK(big.s.key_changes == 0, "a larger stats was not filled");

	struct mrsync_stats one;
	CHECK(mrsync_get_stats(ctx, NULL, sizeof one) == -EINVAL && has("out is NULL"),
	      "out NULL was accepted");
	CHECK(mrsync_get_stats(ctx, &one, 4) == -EINVAL && has("out_size"), "out_size 4 was accepted");
	CHECK(mrsync_get_stats(NULL, &one, sizeof one) == -EINVAL && has("ctx is NULL"),
	      "ctx NULL was accepted");
}

/* A program linked against 0.1 calls the two-argument mrsync_get_stats:
 * it binds to mrsync_get_stats@MRSYNC_0.1, which this names explicitly. */
int old_get_stats(struct mrsync_ctx *ctx, struct mrsync_stats *out);
__asm__(".symver old_get_stats, mrsync_get_stats@MRSYNC_0.1");

static void old_stats_call(struct mrsync_ctx *ctx)
{
	struct mrsync_stats s;
	memset(&s, 0xaa, sizeof s);
	CHECK(old_get_stats(ctx, &s) == 0, "the 0.1 stats call failed");
	CHECK(s.regions == 0 && s.key_changes == 0, "the 0.1 stats call did not fill the struct");
	CHECK(old_get_stats(ctx, NULL) == -EINVAL, "the 0.1 stats call took out NULL");
}

#ifdef MRSYNC_TEST_VERBS
/* The verbs calls: the same error channel, on a context of another driver. */
static void verbs_calls(struct mrsync_ctx *ctx)
{
	struct mrsync_verbs_stats vs;
	CHECK(mrsync_verbs_get_stats(ctx, &vs, sizeof vs) == -EINVAL && has("not a verbs context"),
	      "verbs stats on a null context");
	CHECK(mrsync_verbs_quiesced(NULL) == -EINVAL && has("ctx is NULL"), "quiesced(NULL)");
}
#endif

int main(void)
{
	old_params_accepted();
	newer_params();
	bad_params();
	struct mrsync_params p = null_params();
	struct mrsync_ctx *ctx = NULL;
	if (mrsync_ctx_create(&p, &ctx) != 0) {
		printf("FAIL: null context: %s\n", mrsync_last_error());
		return 1;
	}
	stats_sizes(ctx);
	old_stats_call(ctx);
#ifdef MRSYNC_TEST_VERBS
	verbs_calls(ctx);
#endif
	mrsync_ctx_destroy(&ctx);
	printf("%s\n", failures ? "FAILED" : "all checks passed");
	return failures != 0;
}
