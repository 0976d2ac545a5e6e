/* SPDX-License-Identifier: MIT */
/**
 * @file
 * The mlx5 driver: stable rkeys on ConnectX NICs (docs/mlx5.md).
 * Pass a struct mrsync_mlx5_params as mrsync_params.driver_arg with
 * driver = "mlx5" (or NULL: the driver opens $MRSYNC_MLX5_DEVICE or the first
 * mlx5 device itself, with DEVX and its own protection domain).
 *
 * A registration's key is an indirect mkey addressed by virtual address; its
 * entries point at per-window child keys whose KLM entries point at chunk MRs.
 * A resync rewrites one child's list with one inline UMR and waits for the
 * UMR's completion (the fence) before the replaced chunks are deregistered:
 * the lkey/rkey never change and DMA to untouched pages is never disturbed.
 *
 * The driver adopts the application's DEVX context and PD: its QPs must be
 * created in `pd`, since the keys belong to that PD. With both NULL the driver
 * opens its own (useful only to programs that post through it, such as
 * test/hw/mlx5).
 * Errors as in mrsync.h: -errno and mrsync_last_error().
 */
#ifndef MRSYNC_MLX5_H
#define MRSYNC_MLX5_H

#include <stddef.h>
#include <stdint.h>

#include <mrsync/mrsync.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

struct ibv_context;
struct ibv_pd;

struct mrsync_mlx5_params {
	uint32_t struct_size;          /**< sizeof(struct mrsync_mlx5_params) */
	uint32_t fence_timeout_ms;     /**< bound of the UMR completion wait; 0 = 30 000 */
	struct ibv_context *context;   /**< opened with mlx5dv_open_device(DEVX); NULL = own */
	struct ibv_pd *pd;             /**< the PD of the keys, in context; NULL = own */
	const char *device;            /**< with context NULL: device name; NULL = first mlx5 */
	uint32_t flags;                /**< MRSYNC_MLX5_F_*; a struct_size that ends before it reads as 0 */
};

/**
 * The device does not refuse DMA through a KLM that names a never-configured
 * indirect key (test/hw/mlx5 prints this as "poison refusal: NOT refused").
 * A hole (a page being replaced, or unmapped) then cannot refuse DMA by
 * itself, so the driver makes the registration's whole key free while it has
 * a hole (every access through it is refused, none is discarded) and
 * configures it again, same number, once every hole is filled. Without it the
 * driver assumes the hardware refuses (the model's and the PRM's reading).
 */
#define MRSYNC_MLX5_F_HOLES_FREE_KEY (1u << 0)

/**
 * When the mlx5 device lacks what the driver needs (DEVX, UMR on indirect
 * mkeys, max_indirection >= 3), create the context on the verbs driver
 * instead, in `pd` (or on `device`), and say why in one log line. Off by
 * default, because the verbs driver changes what the application must do:
 * keys change on a resync (on_key_change), a peer's old rkey reaches the
 * old pages until mrsync_verbs_quiesced() (mrsync/verbs.h), so it must be
 * the application's choice. Without it the context creation fails with
 * EOPNOTSUPP naming what is missing. No mlx5 device at all stays ENODEV.
 */
#define MRSYNC_MLX5_F_FALLBACK_VERBS (1u << 1)

/** The size of the struct before `flags`: callers built against it keep working. */
#define MRSYNC_MLX5_PARAMS_SIZE_V1 (offsetof(struct mrsync_mlx5_params, device) + sizeof(const char *))

#define MRSYNC_MLX5_PARAMS_INIT {.struct_size = sizeof(struct mrsync_mlx5_params)}

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif

#endif
