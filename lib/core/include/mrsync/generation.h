/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The generation protocol, named once: the kernel's
 * mmu_interval_read_begin()/mmu_interval_read_retry() idiom over the words
 * mrsync_generation_words() hands out.
 *
 *     uint64_t seq = mrsync_gen_begin(words, n);   // before the lookup
 *     ... look up, or fill a cache under seq ...
 *     if (mrsync_gen_retry(words, n, seq))         // a source reported a change
 *             ... drop what was taken under seq, go to the slow path ...
 *
 * Every word only grows, so their sum moves exactly when one of them moves: a
 * value once returned by mrsync_gen_begin() for a set of words never comes
 * back, across a fork too (the context's own word, the last one, jumps past
 * every value the parent showed when a fork child rebuilds; re-fetch the
 * words whenever the sum moved, since the child's sources have new ones).
 *
 * Plain C with the GCC/Clang __atomic builtins, so the C header of
 * libmrsync_dpdk can inline it. Thread safety: lock-free loads only; any
 * thread, any time the context lives.
 */
#ifndef MRSYNC_GENERATION_H
#define MRSYNC_GENERATION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The begin half: the sum of `n` generation words, each loaded with acquire
 * ordering, so whatever a source published before a bump is visible to a
 * reader that sees the bump.
 * @param words the words (mrsync_generation_words())
 * @param n     how many; 0 gives 0 (generation checks off)
 * @return the sequence to compare later with mrsync_gen_retry()
 */
static inline uint64_t mrsync_gen_begin(const uint64_t *const *words, uint32_t n)
{
	uint64_t sum = 0;
	for (uint32_t i = 0; i < n; ++i)
		sum += __atomic_load_n(words[i], __ATOMIC_ACQUIRE);
	return sum;
}

/**
 * The retry half: whether a source reported a change since `seq` was read.
 * @param words the words given to mrsync_gen_begin()
 * @param n     how many
 * @param seq   what mrsync_gen_begin() returned
 * @return non-zero when the words moved (what was taken under `seq` may be
 *         stale), 0 when nothing changed
 */
static inline int mrsync_gen_retry(const uint64_t *const *words, uint32_t n, uint64_t seq)
{
	return mrsync_gen_begin(words, n) != seq;
}

#ifdef __cplusplus
}
#endif

#endif
