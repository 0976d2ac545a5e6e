/* SPDX-License-Identifier: MIT */
/* The driver operations of the io_uring HCA: backings are the DMA engine's
 * registered-buffer slots, registrations are keys with an extent list. The
 * kernel's slot table and our extent lists together are the device's
 * translation table; the translator below reads the lists for the engine. */
#include "uring_pvt.hpp"

#include "extent_list.hpp"
#include "format.hpp"

#include <cinttypes>

#include <mrsync/mrsync.h>

namespace mrsync::uring {

namespace {

using ::mrsync::detail::fmt;

constexpr std::uint32_t kWriteAccess = MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_WRITE;

} // namespace

Hca::Hca(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Hca::~Hca() = default;

std::string_view Hca::name() const noexcept
{
	return "uring";
}

DriverCaps Hca::caps() const noexcept
{
	return DriverCaps{.entry_granularity = kEntryGranularity,
			  .max_backing_bytes = kMaxBackingBytes,
			  .max_backings = kMaxBackings,
			  .keys_survive_map = true};
}

Result<BackingId> Hca::pin(std::uint64_t va, std::uint64_t len)
{
	std::lock_guard control(impl_->control_mu);
	return impl_->engine->pin(va, len);
}

void Hca::unpin(BackingId backing) noexcept
{
	if (backing == kNoBacking || impl_->engine->abandoned())
		return;
	std::lock_guard control(impl_->control_mu);
	impl_->engine->unpin(backing);
}

int Hca::Impl::translate(std::uint32_t key, std::uint64_t va, std::uint64_t len,
			 bool into_memory, std::vector<dma::Piece> &out)
{
	auto it = regs.find(key);
	if (it == regs.end())
		return EINVAL;
	const detail::Registration &reg = it->second;
	if (into_memory && !(reg.access & kWriteAccess))
		return EACCES;
	if (va < reg.va || len > reg.len || va - reg.va > reg.len - len)
		return EFAULT;
	/* kNoBacking pieces go too: the engine refuses them with the retired
	 * slots, before any byte moves. */
	detail::for_each_piece(reg, va, len, [&](const Extent &e, std::uint64_t at, std::uint64_t n) {
		out.push_back({e.backing, at, n});
	});
	return 0;
}

Status Hca::Impl::check_translation(const detail::Registration &reg,
				    std::span<const Extent> extents, std::uint64_t from,
				    std::uint64_t to)
{
	std::uint64_t expect = from;
	for (std::size_t i = 0; i < extents.size(); ++i) {
		const Extent &e = extents[i];
		if (e.offset != expect)
			return make_error(EINVAL, fmt("uring translation: extent %zu starts at %#" PRIx64
						       ", expected %#" PRIx64 " (extents must be sorted "
						       "and contiguous)",
						       i, e.offset, expect));
		if (e.length == 0 || e.length % kEntryGranularity || e.length > reg.len - expect ||
		    e.offset % kEntryGranularity)
			return make_error(EINVAL, fmt("uring translation: extent %zu has length %#" PRIx64
						       " (a non-zero multiple of 4096 within the "
						       "%#" PRIx64 "-byte registration)",
						       i, e.length, reg.len));
		expect += e.length;
		if (e.backing == kNoBacking)
			continue;
		std::uint64_t s_va = 0, s_len = 0;
		if (!engine->pinned_range(e.backing, s_va, s_len))
			return make_error(EINVAL, fmt("uring translation: extent %zu names backing %#x, "
						       "which is not pinned",
						       i, e.backing));
		const std::uint64_t va = reg.va + e.offset;
		if (va < s_va || va + e.length > s_va + s_len)
			return make_error(EINVAL, fmt("uring translation: extent %zu [%#" PRIx64
						       ", %#" PRIx64 ") lies outside backing %#x [%#" PRIx64
						       ", %#" PRIx64 ")",
						       i, va, va + e.length, e.backing, s_va, s_va + s_len));
	}
	if (expect != to && from == 0 && to == reg.len)
		return make_error(EINVAL, fmt("uring translation covers %#" PRIx64 " of %#" PRIx64
					       " bytes",
					       expect, reg.len));
	if (expect != to)
		return make_error(EINVAL, fmt("uring translation covers [%#" PRIx64 ", %#" PRIx64
					       ") of the changed window [%#" PRIx64 ", %#" PRIx64 ")",
					       from, expect, from, to));
	return {};
}

Result<Keys> Hca::create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			 std::span<const Extent> translation)
{
	if (auto st = dma::check_range("uring", "create", va, len, UINT64_MAX); !st)
		return std::move(st).error();
	if (access & ~std::uint32_t(MRSYNC_ACCESS_ALL))
		return make_error(EINVAL, fmt("uring create: unknown access bits %#x", access));
	std::lock_guard control(impl_->control_mu);
	detail::Registration reg{va, len, access, {}};
	if (auto st = impl_->check_translation(reg, translation, 0, len); !st)
		return std::move(st).error();
	reg.extents.assign(translation.begin(), translation.end());

	/* Keys count up and skip 0 and live keys: a destroyed key comes back
	 * only after 2^32 creations. */
	std::uint32_t key = impl_->next_key;
	while (key == 0 || impl_->regs.contains(key))
		++key;
	impl_->next_key = key + 1;
	{
		auto lock = impl_->engine->hold_submission();
		impl_->regs.emplace(key, std::move(reg));
	}
	impl_->registrations++;
	return Keys{key, key};
}

Result<Keys> Hca::map(Keys keys, std::span<const Extent> translation)
{
	std::lock_guard control(impl_->control_mu);
	/* Reading regs without the submission lock is safe: only control
	 * operations change it, and they hold the control lock. */
	auto it = impl_->regs.find(keys.lkey);
	if (it == impl_->regs.end() || keys.rkey != keys.lkey)
		return make_error(EINVAL, fmt("uring map: unknown keys %#x/%#x", keys.lkey, keys.rkey));
	if (auto st = impl_->check_translation(it->second, translation, 0, it->second.len); !st)
		return std::move(st).error();
	std::vector<Extent> fresh(translation.begin(), translation.end());
	{
		/* The whole swap under the lock DMA translates under: a request
		 * sees the old list or the new one, never a mix. */
		auto lock = impl_->engine->hold_submission();
		it->second.extents.swap(fresh);
	}
	return keys; /* the old list is freed here, outside the lock */
}

Result<Keys> Hca::map_changed(Keys keys, std::span<const Extent> translation,
			       std::span<const Range> changed)
{
	std::lock_guard control(impl_->control_mu);
	auto it = impl_->regs.find(keys.lkey);
	if (it == impl_->regs.end() || keys.rkey != keys.lkey)
		return make_error(EINVAL, fmt("uring map_changed: unknown keys %#x/%#x", keys.lkey,
					       keys.rkey));
	detail::Registration &reg = it->second;
	if (translation.empty() || translation.front().offset != 0 ||
	    translation.back().offset + translation.back().length != reg.len)
		return make_error(EINVAL, fmt("uring map_changed: translation does not span the "
					       "%#" PRIx64 "-byte registration",
					       reg.len));
	/* Every window (the new extents that hold a changed range) is checked
	 * before any is applied: on failure the device keeps the old list. */
	std::vector<std::span<const Extent>> windows;
	windows.reserve(changed.size());
	std::uint64_t done = 0;
	for (std::size_t i = 0; i < changed.size(); ++i) {
		const Range &c = changed[i];
		if (c.start >= c.end || c.start < done || c.end > reg.len)
			return make_error(EINVAL, fmt("uring map_changed: changed range %zu [%#" PRIx64
						       ", %#" PRIx64 ") is empty, unsorted or outside "
						       "the %#" PRIx64 "-byte registration",
						       i, c.start, c.end, reg.len));
		done = c.end;
		const std::size_t lo = ::mrsync::detail::extent_holding(translation, c.start);
		const std::size_t hi = ::mrsync::detail::extent_from(translation, c.end);
		if (lo >= hi)
			return make_error(EINVAL, fmt("uring map_changed: no extent holds changed "
						       "range %zu (unsorted translation)", i));
		const auto window = translation.subspan(lo, hi - lo);
		const std::uint64_t end = window.back().offset + window.back().length;
		if (auto st = impl_->check_translation(reg, window, window.front().offset, end); !st)
			return std::move(st).error();
		windows.push_back(window);
	}
	/* Under the lock DMA translates under: a request sees the old list or
	 * the new one, never a mix. Each splice moves the list's tail at most. */
	auto lock = impl_->engine->hold_submission();
	for (const auto &w : windows) {
		const std::uint64_t from = w.front().offset;
		::mrsync::detail::splice_extents(reg.extents, from, w.back().offset + w.back().length - from,
				       w, [](BackingId, std::uint64_t) {});
	}
	return keys;
}

void Hca::destroy(Keys keys) noexcept
{
	std::lock_guard control(impl_->control_mu);
	decltype(impl_->regs)::node_type gone;
	{
		auto lock = impl_->engine->hold_submission();
		gone = impl_->regs.extract(keys.lkey);
	}
	if (gone)
		impl_->registrations--;
}

Status Hca::fence()
{
	return impl_->engine->fence();
}

void Hca::abandon() noexcept
{
	impl_->engine->abandon();
}

HcaStats Hca::stats() const noexcept
{
	HcaStats s = impl_->engine->stats();
	s.registrations = impl_->registrations.load();
	return s;
}

/* The DMA API is the engine's; the HCA's keys are what it translates. */

Status Hca::write(std::uint32_t lkey, std::uint64_t va, std::span<const std::byte> src,
		  std::uint64_t user_data)
{
	return impl_->engine->write(lkey, va, src, user_data);
}

Status Hca::read(std::uint32_t lkey, std::uint64_t va, std::span<std::byte> dst,
		 std::uint64_t user_data)
{
	return impl_->engine->read(lkey, va, dst, user_data);
}

Status Hca::burst(std::span<const DmaOp> ops, std::span<int> results)
{
	return impl_->engine->burst(ops, results);
}

std::size_t Hca::poll(std::span<Completion> out)
{
	return impl_->engine->poll(out);
}

Result<Completion> Hca::wait_one(std::chrono::milliseconds timeout)
{
	return impl_->engine->wait_one(timeout);
}

Result<Completion> Hca::wait(std::uint64_t user_data, std::chrono::milliseconds timeout)
{
	return impl_->engine->wait(user_data, timeout);
}

Status Hca::wait_releases(std::chrono::milliseconds timeout)
{
	return impl_->engine->wait_releases(timeout);
}

Result<std::unique_ptr<Hca>> Hca::create(const HcaOptions &options)
{
	auto impl = std::make_unique<Impl>();
	const dma::EngineOptions engine_options{.name = "uring",
						.queue_depth = options.queue_depth,
						.staging_bytes = options.staging_bytes,
						.dirty_on_unpin = options.dirty_on_unpin};
	auto engine = dma::Engine::create(engine_options, *impl);
	if (!engine)
		return std::move(engine).error();
	impl->engine = std::move(engine).value();
	return std::unique_ptr<Hca>(new Hca(std::move(impl)));
}

bool Hca::available(std::string &why)
{
	return dma::Engine::available(why);
}

namespace {

Result<std::unique_ptr<Driver>> create_driver(const DriverConfig &config)
{
	if (config.entry_size == 0 || config.entry_size % kEntryGranularity)
		return make_error(EINVAL, fmt("uring: entry_size %llu is not a multiple of 4096",
					       (unsigned long long)config.entry_size));
	auto hca = Hca::create();
	if (!hca)
		return std::move(hca).error();
	return std::unique_ptr<Driver>(std::move(hca).value());
}

const DriverFactory kFactory{
	.name = "uring",
	.available = &Hca::available,
	.create = &create_driver,
};

} // namespace

} // namespace mrsync::uring

MRSYNC_REGISTER_DRIVER(mrsync::uring::kFactory)
