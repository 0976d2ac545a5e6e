/* SPDX-License-Identifier: MIT */
/* The driver operations of the io_uring HCA: backings are registered-buffer
 * slots, registrations are keys with an extent list. The kernel's slot table
 * and our extent lists together are the device's translation table. */
#include "uring_pvt.hpp"

#include "extent_list.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include <cinttypes>
#include <cstring>

#include <mrsync/mrsync.h>

namespace mrsync::uring {

namespace {

using detail::fmt;

/* Checks what pin() and create() share: a non-empty, page-aligned range
 * that does not wrap and is not larger than `max`. */
Status check_range(const char *op, std::uint64_t va, std::uint64_t len, std::uint64_t max)
{
	const char *bad = nullptr;
	if (len == 0)
		bad = "zero length";
	else if (va % kEntryGranularity || len % kEntryGranularity)
		bad = "not page-aligned (4096)";
	else if (va + len < va)
		bad = "wraps around the address space";
	else if (len > max)
		bad = "larger than the 1 GiB a registered buffer may hold";
	if (!bad)
		return {};
	return make_error(EINVAL, fmt("uring %s [%#" PRIx64 ", +%#" PRIx64 "): %s", op, va, len,
				       bad));
}

std::string memlock_limit()
{
	rlimit rl{};
	if (::getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return "unlimited";
	return fmt("%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
}

Error pin_error(int err, std::uint64_t va, std::uint64_t len, std::uint64_t pinned)
{
	const auto end = va + len;
	switch (err) {
	case EFAULT:
	case EOPNOTSUPP: /* file-backed memory the kernel will not long-term pin */
		return make_error(EFAULT, fmt("uring pin [%#" PRIx64 ", %#" PRIx64 "): not mapped "
					       "or not pinnable (%s)",
					       va, end, detail::errno_text(err).c_str()));
	case ENOMEM:
		return make_error(ENOMEM,
				  fmt("uring pin [%#" PRIx64 ", %#" PRIx64 "): RLIMIT_MEMLOCK reached "
				       "(limit %s, %" PRIu64 " bytes already pinned by this HCA); "
				       "raise it with `ulimit -l`, LimitMEMLOCK= in the systemd unit, "
				       "or run with CAP_IPC_LOCK",
				       va, end, memlock_limit().c_str(), pinned));
	default:
		return make_error(err, fmt("uring pin [%#" PRIx64 ", %#" PRIx64 "): %s", va, end,
					    detail::errno_text(err).c_str()));
	}
}

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

bool Hca::Impl::take_free_slot(std::uint32_t &slot, std::uint32_t &gen) noexcept
{
	std::lock_guard lock(backing_mu);
	if (free_slots.empty())
		return false;
	slot = free_slots.back();
	free_slots.pop_back();
	auto &s = slots[slot];
	s.state = detail::SlotState::Pinning;
	s.written.store(false, std::memory_order_relaxed);
	s.gen = (s.gen + 1) % detail::kGenLimit;
	gen = s.gen;
	return true;
}

Result<BackingId> Hca::pin(std::uint64_t va, std::uint64_t len)
{
	if (auto st = check_range("pin", va, len, kMaxBackingBytes); !st)
		return std::move(st).error();
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, "uring pin: the HCA was abandoned (fork child)");
	std::lock_guard control(impl_->control_mu);

	std::uint32_t slot = 0, gen = 0;
	if (!impl_->take_free_slot(slot, gen)) {
		/* Slots come back with their release tags: collect those first. */
		impl_->collect();
		if (!impl_->take_free_slot(slot, gen))
			return make_error(ENOSPC, fmt("uring pin [%#" PRIx64 ", %#" PRIx64 "): all %u "
						       "slots are pinned or awaiting their release tag",
						       va, va + len, kMaxBackings));
	}

	/* A non-zero tag makes the kernel post a CQE when it drops this buffer
	 * after its last user: that CQE, not unpin(), ends the pin. */
	__u64 tag = detail::kTagBit | std::uint64_t(gen) << 32 | slot;
	iovec iov{reinterpret_cast<void *>(va), std::size_t(len)};
	const int rc = io_uring_register_buffers_update_tag(impl_->ring.get(), slot, &iov, &tag, 1);
	auto &s = impl_->slots[slot];
	{
		std::lock_guard lock(impl_->backing_mu);
		if (rc != 1) {
			s.state = detail::SlotState::Free;
			impl_->free_slots.push_back(slot);
		} else {
			s.va = va;
			s.len = len;
			s.state = detail::SlotState::Pinned;
		}
	}
	if (rc != 1)
		return pin_error(rc < 0 ? -rc : EIO, va, len, impl_->counters.pinned_bytes.load());

	impl_->counters.pinned_bytes += len;
	const BackingId id = detail::backing_id(slot, gen);
	s.live.store(id, std::memory_order_release);
	return id;
}

void Hca::unpin(BackingId backing) noexcept
{
	if (impl_->abandoned || backing == kNoBacking)
		return;
	std::lock_guard control(impl_->control_mu);
	const std::uint32_t slot = backing & detail::kSlotMask;
	auto &s = impl_->slots[slot];
	{
		std::lock_guard lock(impl_->backing_mu);
		if (s.state != detail::SlotState::Pinned || detail::backing_id(slot, s.gen) != backing) {
			MRSYNC_LOG(error, "uring", "unpin of backing %#x, which is not pinned", backing);
			return;
		}
		s.state = detail::SlotState::Releasing;
	}
	/* Under the submission lock: any request that found the backing live
	 * has been submitted, so the kernel holds the old buffer for it and the
	 * release tag cannot come (nor the slot be reused) before it ends. */
	{
		std::lock_guard lock(impl_->submit_mu);
		s.live.store(kNoBacking, std::memory_order_relaxed);
	}
	impl_->counters.slots_releasing++;
	/* While our pin still holds the pages (the kernel drops them after the
	 * update below), like unpin_user_pages_dirty_lock() at an MR's end. */
	if (impl_->options.dirty_on_unpin && s.written.exchange(false, std::memory_order_relaxed))
		impl_->dirty_resident(s.va, s.len);

	iovec none{nullptr, 0};
	__u64 no_tag = 0;
	const int rc = io_uring_register_buffers_update_tag(impl_->ring.get(), slot, &none, &no_tag, 1);
	if (rc == 1)
		return;
	/* The kernel still holds the buffer: keep it usable rather than leak a
	 * slot in a state nothing would ever leave. */
	MRSYNC_LOG(error, "uring", "emptying slot %u: %s; backing %#x stays pinned", slot,
			  detail::errno_text(rc < 0 ? -rc : EIO).c_str(), backing);
	{
		std::lock_guard lock(impl_->backing_mu);
		s.state = detail::SlotState::Pinned;
	}
	impl_->counters.slots_releasing--;
	s.live.store(backing, std::memory_order_release);
}

/* Marks dirty the pages of [va, va + len) that are still mapped, through the
 * application's mapping (the kernel offers user space no way to dirty the
 * pinned pages themselves). A page still mapped there is the pinned one
 * unless a change replaced it, and a replaced page is one nobody sees any
 * more. Pages not resident are skipped: populating them would undo the
 * application's MADV_DONTNEED. MADV_POPULATE_WRITE changes no byte; it fails
 * harmlessly on a read-only or unmapped range. */
void Hca::Impl::dirty_resident(std::uint64_t va, std::uint64_t len) noexcept
{
	const std::uint64_t pages = len / kEntryGranularity;
	std::vector<unsigned char> resident;
	try {
		resident.resize(pages);
	} catch (...) {
		return;
	}
	if (::mincore(reinterpret_cast<void *>(va), len, resident.data()) != 0)
		return;
	for (std::uint64_t i = 0; i < pages;) {
		if (!(resident[i] & 1)) {
			++i;
			continue;
		}
		std::uint64_t j = i;
		while (j < pages && (resident[j] & 1))
			++j;
		(void)::madvise(reinterpret_cast<void *>(va + i * kEntryGranularity),
				(j - i) * kEntryGranularity, MADV_POPULATE_WRITE);
		i = j;
	}
}

Status Hca::Impl::check_translation(const detail::Registration &reg,
				    std::span<const Extent> extents, std::uint64_t from,
				    std::uint64_t to)
{
	std::lock_guard lock(backing_mu);
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
		const std::uint32_t slot = e.backing & detail::kSlotMask;
		const auto &s = slots[slot];
		if (s.state != detail::SlotState::Pinned || detail::backing_id(slot, s.gen) != e.backing)
			return make_error(EINVAL, fmt("uring translation: extent %zu names backing %#x, "
						       "which is not pinned",
						       i, e.backing));
		const std::uint64_t va = reg.va + e.offset;
		if (va < s.va || va + e.length > s.va + s.len)
			return make_error(EINVAL, fmt("uring translation: extent %zu [%#" PRIx64
						       ", %#" PRIx64 ") lies outside backing %#x [%#" PRIx64
						       ", %#" PRIx64 ")",
						       i, va, va + e.length, e.backing, s.va, s.va + s.len));
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
	if (auto st = check_range("create", va, len, UINT64_MAX); !st)
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
		std::lock_guard lock(impl_->submit_mu);
		impl_->regs.emplace(key, std::move(reg));
	}
	impl_->counters.registrations++;
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
		std::lock_guard lock(impl_->submit_mu);
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
	std::lock_guard lock(impl_->submit_mu);
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
		std::lock_guard lock(impl_->submit_mu);
		gone = impl_->regs.extract(keys.lkey);
	}
	if (gone)
		impl_->counters.registrations--;
}

Status Hca::fence()
{
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, "uring fence: the HCA was abandoned (fork child)");
	return impl_->fence_until(detail::Clock::now() + std::chrono::minutes(1));
}

void Hca::abandon() noexcept
{
	impl_->close_without_unregistering();
}

HcaStats Hca::stats() const noexcept
{
	const auto &c = impl_->counters;
	std::uint32_t free_slots = 0;
	{
		/* From the free stack itself, so a slot lost on an error path shows. */
		std::lock_guard lock(impl_->backing_mu);
		free_slots = std::uint32_t(impl_->free_slots.size());
	}
	return HcaStats{.pinned_bytes = c.pinned_bytes.load(),
			.slots_in_use = kMaxBackings - free_slots,
			.slots_releasing = c.slots_releasing.load(),
			.registrations = c.registrations.load(),
			.dma_submitted = c.dma_submitted.load(),
			.dma_completed = c.dma_completed.load(),
			.dma_refused = c.dma_refused.load(),
			.sqes = c.sqes.load(),
			.release_tags = c.release_tags.load(),
			.submits = c.submits.load()};
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
