/* SPDX-License-Identifier: MIT */
/* driver_arg validation and the translation diff (vfio_pvt.hpp). */
#include <cerrno>
#include <cinttypes>
#include <cstddef>

#include <mrsync/vfio.h>

#include "format.hpp"
#include "vfio_pvt.hpp"

namespace mrsync::vfio {

using detail::fmt;

Result<Options> parse_params(const void *arg)
{
	if (!arg)
		return make_error(EINVAL, "vfio: params->driver_arg is NULL: pass a struct "
					  "mrsync_vfio_params naming a device or a container");
	const auto &p = *static_cast<const mrsync_vfio_params *>(arg);
	/* The oldest layout this driver accepts is the first one. */
	if (p.struct_size != sizeof(mrsync_vfio_params))
		return make_error(EINVAL, fmt("vfio: driver_arg->struct_size %u is not %zu "
					      "(use MRSYNC_VFIO_PARAMS_INIT)", p.struct_size,
					      sizeof(mrsync_vfio_params)));
	if (p.flags & ~MRSYNC_VFIO_F_ADOPT_CONTAINER)
		return make_error(EINVAL, fmt("vfio: driver_arg->flags 0x%x has unknown bits",
					      p.flags));
	Options o;
	o.adopt = p.flags & MRSYNC_VFIO_F_ADOPT_CONTAINER;
	if (o.adopt) {
		if (p.device)
			return make_error(EINVAL, "vfio: driver_arg->device and "
						  "MRSYNC_VFIO_F_ADOPT_CONTAINER exclude each other");
		if (p.container_fd < 0)
			return make_error(EINVAL, fmt("vfio: driver_arg->container_fd %d is negative",
						      p.container_fd));
		o.container_fd = p.container_fd;
	} else {
		if (!p.device || !*p.device)
			return make_error(EINVAL, "vfio: driver_arg->device is NULL or empty and "
						  "MRSYNC_VFIO_F_ADOPT_CONTAINER is not set");
		if (p.container_fd)
			return make_error(EINVAL, "vfio: driver_arg->container_fd is set without "
						  "MRSYNC_VFIO_F_ADOPT_CONTAINER");
		o.device = p.device;
	}
	if (p.dma_mask_bits && (p.dma_mask_bits < 21 || p.dma_mask_bits > 64))
		return make_error(EINVAL, fmt("vfio: driver_arg->dma_mask_bits %u is outside "
					      "[21, 64] (0 = 64)", p.dma_mask_bits));
	const std::uint64_t mask_end =
		(!p.dma_mask_bits || p.dma_mask_bits == 64) ? UINT64_MAX : 1ull << p.dma_mask_bits;
	o.iova_base = p.iova_base ? p.iova_base : 1ull << 20;
	o.iova_limit = p.iova_limit ? std::min(p.iova_limit, mask_end) : mask_end;
	if (o.iova_base & 4095)
		return make_error(EINVAL, fmt("vfio: driver_arg->iova_base 0x%" PRIx64
					      " is not page-aligned", p.iova_base));
	if (o.iova_base >= o.iova_limit)
		return make_error(EINVAL, fmt("vfio: driver_arg->iova_base 0x%" PRIx64 " is not "
					      "below the limit 0x%" PRIx64 " (iova_limit or "
					      "dma_mask_bits)", o.iova_base, o.iova_limit));
	return o;
}

std::vector<Change> validity_changes(std::span<const Extent> before,
				     std::span<const Extent> after)
{
	std::vector<Change> out;
	auto emit = [&out](std::uint64_t from, std::uint64_t to, bool valid) {
		if (!out.empty() && out.back().valid == valid &&
		    out.back().offset + out.back().length == from)
			out.back().length += to - from;
		else
			out.push_back({from, to - from, valid});
	};
	std::size_t i = 0, j = 0;
	std::uint64_t at = 0;
	while (i < before.size() && j < after.size()) {
		const Extent &a = before[i], &b = after[j];
		const std::uint64_t end = std::min(a.offset + a.length, b.offset + b.length);
		const bool was = a.backing != kNoBacking, is = b.backing != kNoBacking;
		if (was != is && end > at)
			emit(at, end, is);
		at = end;
		if (a.offset + a.length == end)
			++i;
		if (b.offset + b.length == end)
			++j;
	}
	return out;
}

std::vector<Extent> invalidated(std::span<const Extent> after, std::span<const Change> invalid)
{
	std::vector<Extent> out;
	auto add = [&out](std::uint64_t from, std::uint64_t to, BackingId b) {
		if (from >= to)
			return;
		if (!out.empty() && out.back().backing == b && b == kNoBacking)
			out.back().length += to - from;
		else
			out.push_back({from, to - from, b});
	};
	std::size_t k = 0;
	for (const Extent &e : after) {
		std::uint64_t at = e.offset;
		const std::uint64_t end = e.offset + e.length;
		while (at < end) {
			while (k < invalid.size() && invalid[k].offset + invalid[k].length <= at)
				++k;
			if (k == invalid.size() || invalid[k].offset >= end) {
				add(at, end, e.backing);
				break;
			}
			const Change &c = invalid[k];
			add(at, std::max(at, c.offset), e.backing);
			const std::uint64_t stop = std::min(end, c.offset + c.length);
			add(std::max(at, c.offset), stop, kNoBacking);
			at = stop;
		}
	}
	return out;
}

} // namespace mrsync::vfio
