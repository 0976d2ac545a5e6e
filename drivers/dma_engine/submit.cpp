/* SPDX-License-Identifier: MIT */
/* The engine's DMA submission path. A request reserves a reusable request
 * slot and staging chunks, crosses the wire (the staging memfd) outside any
 * lock, then is translated and submitted under the submission lock -- the
 * lock a driver swaps translations and unpin() retires slots under, so a
 * request sees one whole translation and only live backings. A refused
 * request is submitted as a NOP carrying its error, so it completes through
 * the CQ like any other and wakes whoever waits there. */
#include "engine_pvt.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <thread>

#include <mrsync/mrsync.h>

namespace mrsync::dma {

namespace {

using detail::fmt;
using detail::kWireFile;

} // namespace

Status Engine::write(std::uint32_t key, std::uint64_t va, std::span<const std::byte> src,
		     std::uint64_t user_data, int *refusal)
{
	/* The wire copy reads src; the const_cast never leads to a write. */
	return impl_->submit(true, key, va, const_cast<std::byte *>(src.data()), src.size(),
			     user_data, refusal);
}

Status Engine::read(std::uint32_t key, std::uint64_t va, std::span<std::byte> dst,
		    std::uint64_t user_data, int *refusal)
{
	return impl_->submit(false, key, va, dst.data(), dst.size(), user_data, refusal);
}

Status Engine::Impl::submit(bool to_memory, std::uint32_t key, std::uint64_t va, std::byte *buf,
			    std::uint64_t len, std::uint64_t user_data, int *refusal)
{
	if (abandoned)
		return make_error(ESHUTDOWN, fmt("%s DMA: abandoned (fork child)", options.name));
	if (len == 0)
		return make_error(EINVAL, fmt("%s DMA at %#" PRIx64 ": zero length", options.name, va));
	if (len > kMaxRequestBytes)
		return make_error(EMSGSIZE, fmt("%s DMA at %#" PRIx64 ": %" PRIu64 " bytes exceed "
						 "the %" PRIu64 "-byte request limit",
						 options.name, va, len, kMaxRequestBytes));
	auto reserved = reserve(len, user_data);
	if (!reserved)
		return std::move(reserved).error();
	const std::uint32_t idx = *reserved;
	detail::Request &req = reqs[idx];
	if (to_memory)
		std::memcpy(staging.data() + req.chunk * detail::kChunk, buf, len);
	else
		req.dst = buf;

	std::lock_guard lock(submit_mu);
	const int refused = launch(idx, key, va, to_memory, true);
	flush_sq();
	if (refusal)
		*refusal = refused;
	return {};
}

int Engine::Impl::launch(std::uint32_t idx, std::uint32_t key, std::uint64_t va, bool to_memory,
			 bool async)
{
	detail::Request &req = reqs[idx];
	const int refusal = translate(key, va, req.len, to_memory);
	std::uint32_t sqes = 0;
	std::uint64_t discarded = 0;
	for (const Piece &p : pieces) {
		if (refusal)
			break;
		if (p.backing == kDiscard)
			discarded += p.len;
		else
			++sqes;
	}
	req.seq = ++seq;
	/* Pieces that go nowhere count as moved; a request made only of them
	 * still completes through the CQ, as a NOP. */
	req.pending = refusal || sqes == 0 ? 1 : sqes;
	req.transferred = discarded;
	req.result = -refusal;
	counters.launched.fetch_add(1, std::memory_order_relaxed);
	req.state.store(detail::ReqState::InFlight, std::memory_order_release);
	counters.dma_submitted++;
	if (refusal)
		counters.dma_refused++;
	emit(idx, refusal != 0, to_memory, async);
	return refusal;
}

Result<std::uint32_t> Engine::Impl::reserve(std::uint64_t len, std::uint64_t user_data)
{
	const auto nchunks = std::uint32_t((len + detail::kChunk - 1) / detail::kChunk);
	std::uint32_t idx = 0, first = 0;
	{
		std::lock_guard lock(pool_mu);
		if (free_reqs.empty())
			return make_error(EBUSY, fmt("%s DMA: all %u requests are in flight or hold "
						      "completions not yet collected (poll/wait)",
						      options.name, options.queue_depth));
		idx = free_reqs.back();
		free_reqs.pop_back();
	}
	/* Staging frees as requests complete, so waiting for it is waiting for
	 * completions: reap them (kept for poll) until a run of chunks is free. */
	auto grab = [&] {
		std::lock_guard lock(pool_mu);
		return chunks.alloc(nchunks, first) ? detail::Progress::Done
						    : detail::Progress::Pending;
	};
	if (grab() != detail::Progress::Done) {
		if (auto st = reap_until(grab, detail::Clock::now() + kDefaultWait, "staging space");
		    !st) {
			release_request(idx);
			return std::move(st).error();
		}
	}
	detail::Request &req = reqs[idx];
	req.user_data = user_data;
	req.len = len;
	req.chunk = first;
	req.nchunks = nchunks;
	req.dst = nullptr;
	req.burst = false;
	req.sqe_results = nullptr;
	counters.inflight++;
	req.state.store(detail::ReqState::Reserved, std::memory_order_release);
	return idx;
}

int Engine::Impl::translate(std::uint32_t key, std::uint64_t va, std::uint64_t len,
			    bool to_memory)
{
	pieces.clear();
	if (int refusal = translator.translate(key, va, len, to_memory, pieces))
		return refusal;
	/* Every piece needs a backing that is still pinned: an invalid entry
	 * or a retired slot faults the whole request before any byte moves. */
	std::uint64_t sum = 0;
	for (const Piece &p : pieces) {
		if (p.backing != kDiscard && !live(p.backing))
			return EFAULT;
		sum += p.len;
	}
	if (sum == len)
		return 0;
	MRSYNC_LOG(error, options.name, "the translator gave %" PRIu64 " bytes of pieces for a "
					"%" PRIu64 "-byte request", sum, len);
	return EFAULT;
}

void Engine::Impl::emit(std::uint32_t idx, bool refused, bool to_memory, bool async)
{
	const detail::Request &req = reqs[idx];
	const std::uint64_t wire = req.chunk * detail::kChunk;
	std::uint64_t done = 0;
	bool moved = false;
	for (const Piece &p : refused ? std::span<const Piece>{} : std::span<const Piece>(pieces)) {
		const std::uint64_t at = done;
		done += p.len;
		if (p.backing == kDiscard) {
			/* A read of nothing reads zeros, not the wire's last bytes. */
			if (!to_memory)
				std::memset(staging.data() + wire + at, 0, p.len);
			continue;
		}
		io_uring_sqe *sqe = next_sqe();
		void *addr = reinterpret_cast<void *>(p.va);
		const int slot = int(p.backing & detail::kSlotMask);
		/* READ_FIXED moves wire -> memory (the device writes),
		 * WRITE_FIXED memory -> wire (the device reads). */
		if (to_memory) {
			io_uring_prep_read_fixed(sqe, kWireFile, addr, unsigned(p.len), wire + at, slot);
			slots[slot].written.store(true, std::memory_order_relaxed);
		} else {
			io_uring_prep_write_fixed(sqe, kWireFile, addr, unsigned(p.len), wire + at, slot);
		}
		/* IOSQE_ASYNC: the copy runs on io-wq, not inline in
		 * io_uring_enter under the submission lock, so a large transfer
		 * neither delays a driver's map() nor other submitters -- and DMA
		 * runs beside the CPU, as on a NIC. */
		sqe->flags |= IOSQE_FIXED_FILE | (async ? IOSQE_ASYNC : 0);
		io_uring_sqe_set_data64(sqe, idx);
		counters.sqes++;
		moved = true;
	}
	if (moved)
		return;
	/* Refused, or nothing for the kernel: the completion still comes
	 * through the CQ, carried by a NOP. */
	io_uring_sqe *sqe = next_sqe();
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, idx);
}

io_uring_sqe *Engine::Impl::next_sqe()
{
	io_uring_sqe *sqe = io_uring_get_sqe(ring.get());
	while (!sqe) {
		flush_sq();
		sqe = io_uring_get_sqe(ring.get());
	}
	return sqe;
}

void Engine::Impl::flush_sq()
{
	while (io_uring_sq_ready(ring.get()) > 0) {
		const int rc = io_uring_submit(ring.get());
		if (rc >= 0)
			counters.submits++;
		if (rc >= 0 || rc == -EINTR)
			continue;
		if (rc == -EAGAIN || rc == -EBUSY) {
			/* The kernel wants CQ room or memory: make room and retry.
			 * Nothing may be dropped -- these SQEs are half a request. */
			collect();
			std::this_thread::yield();
			continue;
		}
		MRSYNC_LOG(error, options.name, "io_uring_submit: %s; %u SQEs stay queued for the next submit",
				  detail::errno_text(-rc).c_str(), io_uring_sq_ready(ring.get()));
		return;
	}
}

} // namespace mrsync::dma
