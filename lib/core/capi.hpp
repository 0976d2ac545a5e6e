/* SPDX-License-Identifier: MIT */
/* The error channel of libmrsync's C calls (mrsync.h, "Errors"), for the C
 * calls that live outside capi.cpp (a driver's own, e.g. mrsync/verbs.h). */
#ifndef MRSYNC_CAPI_HPP
#define MRSYNC_CAPI_HPP

#include <string_view>

namespace mrsync::detail {

/* Keeps `message` as this thread's mrsync_last_error() and returns -code. */
int fail_call(int code, std::string_view message) noexcept;

} // namespace mrsync::detail

#endif
