/* SPDX-License-Identifier: MIT */
/* The engine's slot table: a backing is a registered-buffer slot. pin()
 * registers pages into a free slot (the kernel pins them), unpin() empties
 * it; the kernel posts the slot's tag when it drops the buffer after its
 * last in-flight user (reap.cpp frees the slot then). */
#include "engine_pvt.hpp"

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/uio.h>

#include <cinttypes>

namespace mrsync::dma {

namespace {

using detail::fmt;

std::string memlock_limit()
{
	rlimit rl{};
	if (::getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return "unlimited";
	return fmt("%llu KiB", (unsigned long long)rl.rlim_cur / 1024);
}

Error pin_error(const char *name, int err, std::uint64_t va, std::uint64_t len,
		std::uint64_t pinned)
{
	const auto end = va + len;
	switch (err) {
	case EFAULT:
	case EOPNOTSUPP: /* file-backed memory the kernel will not long-term pin */
		return make_error(EFAULT, fmt("%s pin [%#" PRIx64 ", %#" PRIx64 "): not mapped "
					       "or not pinnable (%s)",
					       name, va, end, detail::errno_text(err).c_str()));
	case ENOMEM:
		return make_error(ENOMEM,
				  fmt("%s pin [%#" PRIx64 ", %#" PRIx64 "): RLIMIT_MEMLOCK reached "
				       "(limit %s, %" PRIu64 " bytes already pinned by this engine); "
				       "raise it with `ulimit -l`, LimitMEMLOCK= in the systemd unit, "
				       "or run with CAP_IPC_LOCK",
				       name, va, end, memlock_limit().c_str(), pinned));
	default:
		return make_error(err, fmt("%s pin [%#" PRIx64 ", %#" PRIx64 "): %s", name, va, end,
					    detail::errno_text(err).c_str()));
	}
}

} // namespace

Status check_range(const char *name, const char *op, std::uint64_t va, std::uint64_t len,
		   std::uint64_t max)
{
	const char *bad = nullptr;
	if (len == 0)
		bad = "zero length";
	else if (va % kPageBytes || len % kPageBytes)
		bad = "not page-aligned (4096)";
	else if (va + len < va)
		bad = "wraps around the address space";
	else if (len > max)
		bad = "larger than the 1 GiB a registered buffer may hold";
	if (!bad)
		return {};
	return make_error(EINVAL, fmt("%s %s [%#" PRIx64 ", +%#" PRIx64 "): %s", name, op, va, len,
				       bad));
}

bool Engine::Impl::take_free_slot(std::uint32_t &slot, std::uint32_t &gen) noexcept
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

Result<BackingId> Engine::pin(std::uint64_t va, std::uint64_t len)
{
	const char *name = impl_->options.name;
	if (auto st = check_range(name, "pin", va, len, kMaxBackingBytes); !st)
		return std::move(st).error();
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, fmt("%s pin: abandoned (fork child)", name));

	std::uint32_t slot = 0, gen = 0;
	if (!impl_->take_free_slot(slot, gen)) {
		/* Slots come back with their release tags: collect those first. */
		impl_->collect();
		if (!impl_->take_free_slot(slot, gen))
			return make_error(ENOSPC, fmt("%s pin [%#" PRIx64 ", %#" PRIx64 "): all %u "
						       "slots are pinned or awaiting their release tag",
						       name, va, va + len, kMaxBackings));
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
		return pin_error(name, rc < 0 ? -rc : EIO, va, len,
				 impl_->counters.pinned_bytes.load());

	impl_->counters.pinned_bytes += len;
	const BackingId id = detail::backing_id(slot, gen);
	s.live.store(id, std::memory_order_release);
	return id;
}

void Engine::unpin(BackingId backing) noexcept
{
	if (impl_->abandoned || backing == kNoBacking || backing == kDiscard)
		return;
	const std::uint32_t slot = backing & detail::kSlotMask;
	auto &s = impl_->slots[slot];
	{
		std::lock_guard lock(impl_->backing_mu);
		if (s.state != detail::SlotState::Pinned || detail::backing_id(slot, s.gen) != backing) {
			MRSYNC_LOG(error, impl_->options.name, "unpin of backing %#x, which is not pinned",
				   backing);
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
	MRSYNC_LOG(error, impl_->options.name, "emptying slot %u: %s; backing %#x stays pinned", slot,
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
void Engine::Impl::dirty_resident(std::uint64_t va, std::uint64_t len) noexcept
{
	const std::uint64_t pages = len / kPageBytes;
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
		(void)::madvise(reinterpret_cast<void *>(va + i * kPageBytes),
				(j - i) * kPageBytes, MADV_POPULATE_WRITE);
		i = j;
	}
}

bool Engine::pinned_range(BackingId backing, std::uint64_t &va, std::uint64_t &len) const
{
	if (backing == kNoBacking || backing == kDiscard)
		return false;
	const std::uint32_t slot = backing & detail::kSlotMask;
	std::lock_guard lock(impl_->backing_mu);
	const auto &s = impl_->slots[slot];
	if (s.state != detail::SlotState::Pinned || detail::backing_id(slot, s.gen) != backing)
		return false;
	va = s.va;
	len = s.len;
	return true;
}

std::unique_lock<std::mutex> Engine::hold_submission()
{
	return std::unique_lock(impl_->submit_mu);
}

EngineStats Engine::stats() const noexcept
{
	const auto &c = impl_->counters;
	std::uint32_t free_slots = 0;
	{
		/* From the free stack itself, so a slot lost on an error path shows. */
		std::lock_guard lock(impl_->backing_mu);
		free_slots = std::uint32_t(impl_->free_slots.size());
	}
	return EngineStats{.pinned_bytes = c.pinned_bytes.load(),
			   .slots_in_use = kMaxBackings - free_slots,
			   .slots_releasing = c.slots_releasing.load(),
			   .registrations = 0,
			   .dma_submitted = c.dma_submitted.load(),
			   .dma_completed = c.dma_completed.load(),
			   .dma_refused = c.dma_refused.load(),
			   .sqes = c.sqes.load(),
			   .release_tags = c.release_tags.load(),
			   .submits = c.submits.load()};
}

} // namespace mrsync::dma
