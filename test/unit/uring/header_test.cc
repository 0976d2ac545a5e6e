/* SPDX-License-Identifier: MIT */
/* The public header compiles on its own: it is the first and only include. */
#include <mrsync/uring.hpp>

static_assert(sizeof(mrsync::uring::Completion) == 16);
static_assert(mrsync::uring::kMaxBackings == 16384);
