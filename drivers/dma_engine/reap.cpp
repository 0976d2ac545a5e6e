/* SPDX-License-Identifier: MIT */
/* The engine's completion side. The CQ carries two kinds of entries: DMA
 * completions (user_data = request index) and slot-release tags (kTagBit),
 * posted when the kernel drops a buffer after its last user.
 *
 * Any thread may need completions (poll, the waits, fence, a submitter short
 * of staging), but the CQ has one consumer at a time: the completion lock.
 * Blocking uses a leader: one thread waits in the kernel without the lock,
 * the others sleep on a condition variable; while a leader is out, nobody
 * else drains, so the CQE it was woken for is still there when it returns. */
#include "engine_pvt.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>

namespace mrsync::dma {

using detail::Progress;
using detail::fmt;

namespace {

/* A leader re-checks at least this often: requests refused or reserved by
 * other threads can satisfy a waiter without a CQE for the leader. */
constexpr auto kLeaderSlice = std::chrono::milliseconds(50);

} // namespace

Status Engine::Impl::reap_until(detail::PredRef pred, detail::Clock::time_point deadline,
			     const char *what)
{
	if (abandoned)
		return make_error(ESHUTDOWN, fmt("%s: abandoned (fork child)", options.name));
	std::unique_lock lock(reap_mu);
	for (;;) {
		if (!leader)
			drain_cq();
		switch (pred()) {
		case Progress::Done:
			return {};
		case Progress::Never:
			return make_error(ENOENT, fmt("%s: no %s is outstanding", options.name, what));
		case Progress::Pending:
			break;
		}
		const auto now = detail::Clock::now();
		if (now >= deadline)
			return make_error(ETIMEDOUT, fmt("%s: timed out waiting for %s", options.name, what));
		if (leader) {
			reap_cv.wait_until(lock, deadline);
			continue;
		}
		leader = true;
		lock.unlock();
		wait_kernel(std::min(deadline, now + kLeaderSlice));
		lock.lock();
		leader = false;
		drain_cq();
		reap_cv.notify_all();
	}
}

void Engine::Impl::wait_kernel(detail::Clock::time_point deadline)
{
	const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
				deadline - detail::Clock::now())
				.count();
	__kernel_timespec ts{.tv_sec = std::max<long long>(ns, 0) / 1'000'000'000,
			     .tv_nsec = std::max<long long>(ns, 0) % 1'000'000'000};
	io_uring_getevents_arg arg{};
	arg.sigmask_sz = _NSIG / 8;
	arg.ts = reinterpret_cast<std::uint64_t>(&ts);
	/* Raw enter: only the CQ tail is waited on, the head stays ours to move
	 * under the lock. -ETIME and -EINTR just end the slice. */
	io_uring_enter2(ring.get()->ring_fd, 0, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
			reinterpret_cast<sigset_t *>(&arg), sizeof(arg));
}

void Engine::Impl::collect()
{
	if (abandoned)
		return;
	std::lock_guard lock(reap_mu);
	if (!leader)
		drain_cq();
}

void Engine::Impl::drain_cq()
{
	/* What is in the CQ now, plus once what overflowed (NODROP keeps it in
	 * the kernel until an enter moves it over) -- bounded on purpose: under
	 * load CQEs never stop coming and poll() must still return. */
	io_uring *r = ring.get();
	for (int pass = 0; pass < 2; ++pass) {
		unsigned head = 0, n = 0;
		io_uring_cqe *cqe = nullptr;
		io_uring_for_each_cqe(r, head, cqe)
		{
			if (cqe->user_data & detail::kTagBit)
				on_release_tag(cqe->user_data);
			else
				on_dma_cqe(cqe->user_data, cqe->res);
			++n;
		}
		io_uring_cq_advance(r, n);
		if (!io_uring_cq_has_overflow(r))
			return;
		io_uring_get_events(r);
	}
}

void Engine::Impl::on_dma_cqe(std::uint64_t user_data, int res)
{
	const auto idx = std::uint32_t(user_data);
	if (idx >= options.queue_depth ||
	    reqs[idx].state.load(std::memory_order_acquire) != detail::ReqState::InFlight) {
		MRSYNC_LOG(error, options.name, "CQE for request %u, which is not in flight", idx);
		return;
	}
	detail::Request &req = reqs[idx];
	if (req.sqe_results)
		req.sqe_results[user_data >> detail::kSqeShift] = res;
	if (res < 0 && req.result == 0)
		req.result = res;
	else if (res > 0)
		req.transferred += std::uint64_t(res);
	if (--req.pending == 0)
		finish(idx);
}

void Engine::Impl::finish(std::uint32_t idx)
{
	detail::Request &req = reqs[idx];
	/* A short transfer cannot happen on a sized memfd; if it ever did, the
	 * request must not look successful. */
	int result = req.result;
	if (result == 0)
		result = req.transferred == req.len ? int(req.len) : -EIO;
	req.result = result;
	/* A burst's thread watches its round's state, copies out and frees the
	 * staging itself; poll() must not see it. */
	if (req.burst) {
		req.state.store(detail::ReqState::Done, std::memory_order_release);
		counters.launched.fetch_sub(1, std::memory_order_release);
		return;
	}
	if (result > 0 && req.dst)
		std::memcpy(req.dst, staging.data() + req.chunk * detail::kChunk, req.len);
	{
		std::lock_guard lock(pool_mu);
		chunks.free(req.chunk, req.nchunks);
	}
	counters.dma_completed++;
	req.state.store(detail::ReqState::Done, std::memory_order_release);
	done.push(idx);
	counters.inflight--;
	counters.launched.fetch_sub(1, std::memory_order_release);
}

void Engine::Impl::on_release_tag(std::uint64_t tag)
{
	const auto slot = std::uint32_t(tag) & detail::kSlotMask;
	const auto gen = std::uint32_t(tag >> 32) & ~std::uint32_t(detail::kTagBit >> 32);
	std::uint64_t len = 0;
	{
		std::lock_guard lock(backing_mu);
		auto &s = slots[slot];
		if (s.state != detail::SlotState::Releasing || s.gen != gen) {
			MRSYNC_LOG(error, options.name, "release tag for slot %u gen %u, which is not releasing", slot,
					  gen);
			return;
		}
		len = s.len;
		s.state = detail::SlotState::Free;
		free_slots.push_back(slot);
	}
	counters.pinned_bytes -= len;
	counters.slots_releasing--;
	counters.release_tags++;
}

Completion Engine::Impl::take(std::uint32_t fifo_pos) noexcept
{
	const std::uint32_t idx = done.take(fifo_pos);
	const Completion c{reqs[idx].user_data, reqs[idx].result};
	release_request(idx);
	return c;
}

void Engine::Impl::release_request(std::uint32_t idx) noexcept
{
	reqs[idx].state.store(detail::ReqState::Free, std::memory_order_relaxed);
	std::lock_guard lock(pool_mu);
	free_reqs.push_back(idx);
}

Status Engine::Impl::fence_until(detail::Clock::time_point deadline)
{
	std::uint64_t ticket = 0;
	{
		/* Under the submission lock every request up to `ticket` is in
		 * the kernel; later ones get larger tickets. */
		std::lock_guard lock(submit_mu);
		flush_sq();
		ticket = seq;
	}
	auto drained = [&] {
		if (counters.launched.load(std::memory_order_acquire) == 0)
			return Progress::Done; /* the common case: skip the scan */
		for (std::uint32_t i = 0; i < options.queue_depth; ++i)
			if (reqs[i].state.load(std::memory_order_acquire) ==
				    detail::ReqState::InFlight &&
			    reqs[i].seq <= ticket)
				return Progress::Pending;
		return Progress::Done;
	};
	return reap_until(drained, deadline, "DMA before the fence");
}

std::size_t Engine::poll(std::span<Completion> out)
{
	if (impl_->abandoned)
		return 0;
	std::lock_guard lock(impl_->reap_mu);
	if (!impl_->leader)
		impl_->drain_cq();
	std::size_t n = 0;
	while (n < out.size() && !impl_->done.empty())
		out[n++] = impl_->take(0);
	return n;
}

Result<Completion> Engine::wait_one(std::chrono::milliseconds timeout)
{
	Completion c;
	auto next = [&] {
		if (!impl_->done.empty()) {
			c = impl_->take(0);
			return Progress::Done;
		}
		return impl_->counters.inflight.load() ? Progress::Pending : Progress::Never;
	};
	if (auto st = impl_->reap_until(next, detail::Clock::now() + timeout, "request"); !st)
		return std::move(st).error();
	return c;
}

Result<Completion> Engine::wait(std::uint64_t user_data, std::chrono::milliseconds timeout)
{
	Completion c;
	auto mine = [&] {
		for (std::uint32_t i = 0; i < impl_->done.size(); ++i) {
			if (impl_->reqs[impl_->done.at(i)].user_data == user_data) {
				c = impl_->take(i);
				return Progress::Done;
			}
		}
		for (std::uint32_t i = 0; i < impl_->options.queue_depth; ++i) {
			const auto st = impl_->reqs[i].state.load(std::memory_order_acquire);
			if ((st == detail::ReqState::Reserved || st == detail::ReqState::InFlight) &&
			    !impl_->reqs[i].burst && impl_->reqs[i].user_data == user_data)
				return Progress::Pending;
		}
		return Progress::Never;
	};
	if (auto st = impl_->reap_until(mine, detail::Clock::now() + timeout,
					"request with this user_data");
	    !st)
		return std::move(st).error();
	return c;
}

Status Engine::wait_releases(std::chrono::milliseconds timeout)
{
	auto released = [&] {
		return impl_->counters.slots_releasing.load() ? Progress::Pending : Progress::Done;
	};
	return impl_->reap_until(released, detail::Clock::now() + timeout, "release tag");
}

Status Engine::fence()
{
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, fmt("%s fence: abandoned (fork child)", impl_->options.name));
	return impl_->fence_until(detail::Clock::now() + std::chrono::minutes(1));
}

} // namespace mrsync::dma
