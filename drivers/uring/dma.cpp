/* SPDX-License-Identifier: MIT */
/* The HCA's DMA submission path. A request reserves a reusable request slot
 * and staging chunks, crosses the wire (the staging memfd) outside any lock,
 * then is translated and submitted under the submission lock -- the lock
 * map() swaps translations under, so a request sees one whole translation.
 * A refused request is submitted as a NOP carrying its error, so it completes
 * through the CQ like any other and wakes whoever waits there. */
#include "uring_pvt.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <thread>

#include <mrsync/mrsync.h>

namespace mrsync::uring {

namespace {

using detail::fmt;
using detail::for_each_piece;
using detail::kWireFile;

constexpr std::uint32_t kWriteAccess = MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_WRITE;

} // namespace

Status Hca::write(std::uint32_t lkey, std::uint64_t va, std::span<const std::byte> src,
		  std::uint64_t user_data)
{
	/* The wire copy reads src; the const_cast never leads to a write. */
	return impl_->submit(true, lkey, va, const_cast<std::byte *>(src.data()), src.size(),
			     user_data);
}

Status Hca::read(std::uint32_t lkey, std::uint64_t va, std::span<std::byte> dst,
		 std::uint64_t user_data)
{
	return impl_->submit(false, lkey, va, dst.data(), dst.size(), user_data);
}

Status Hca::Impl::submit(bool to_memory, std::uint32_t key, std::uint64_t va, std::byte *buf,
			 std::uint64_t len, std::uint64_t user_data)
{
	if (abandoned)
		return make_error(ESHUTDOWN, "uring DMA: the HCA was abandoned (fork child)");
	if (len == 0)
		return make_error(EINVAL, fmt("uring DMA at %#" PRIx64 ": zero length", va));
	if (len > kMaxRequestBytes)
		return make_error(EMSGSIZE, fmt("uring DMA at %#" PRIx64 ": %" PRIu64 " bytes exceed "
						 "the %" PRIu64 "-byte request limit",
						 va, len, kMaxRequestBytes));
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
	launch(idx, key, va, to_memory, true);
	flush_sq();
	return {};
}

int Hca::Impl::launch(std::uint32_t idx, std::uint32_t key, std::uint64_t va, bool to_memory,
		      bool async)
{
	detail::Request &req = reqs[idx];
	const detail::Registration *reg = nullptr;
	std::uint32_t pieces = 0;
	const int refusal = translate(key, va, req.len, to_memory, reg, pieces);
	req.seq = ++seq;
	req.pending = refusal ? 1 : pieces;
	req.transferred = 0;
	req.result = -refusal;
	counters.launched.fetch_add(1, std::memory_order_relaxed);
	req.state.store(detail::ReqState::InFlight, std::memory_order_release);
	counters.dma_submitted++;
	if (refusal)
		counters.dma_refused++;
	emit(idx, refusal ? nullptr : reg, va, to_memory, async);
	return refusal;
}

Result<std::uint32_t> Hca::Impl::reserve(std::uint64_t len, std::uint64_t user_data)
{
	const auto nchunks = std::uint32_t((len + detail::kChunk - 1) / detail::kChunk);
	std::uint32_t idx = 0, first = 0;
	{
		std::lock_guard lock(pool_mu);
		if (free_reqs.empty())
			return make_error(EBUSY, fmt("uring DMA: all %u requests are in flight or hold "
						      "completions not yet collected (poll/wait)",
						      options.queue_depth));
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

int Hca::Impl::translate(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool to_memory,
			 const detail::Registration *&reg, std::uint32_t &pieces)
{
	auto it = regs.find(key);
	if (it == regs.end())
		return EINVAL;
	reg = &it->second;
	if (to_memory && !(reg->access & kWriteAccess))
		return EACCES;
	if (va < reg->va || len > reg->len || va - reg->va > reg->len - len)
		return EFAULT;
	/* Every piece needs a backing that is still pinned: an invalid entry
	 * or a retired slot faults the whole request before any byte moves. */
	const bool mapped = for_each_piece(*reg, va, len, [&](const Extent &e, auto, auto, auto) {
		++pieces;
		return e.backing != kNoBacking &&
		       slots[e.backing & detail::kSlotMask].live.load(std::memory_order_acquire) ==
			       e.backing;
	});
	return mapped ? 0 : EFAULT;
}

void Hca::Impl::emit(std::uint32_t idx, const detail::Registration *reg, std::uint64_t va,
		     bool to_memory, bool async)
{
	if (!reg) {
		io_uring_sqe *sqe = next_sqe();
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, idx);
		return;
	}
	const detail::Request &req = reqs[idx];
	const std::uint64_t wire = req.chunk * detail::kChunk;
	for_each_piece(*reg, va, req.len,
		       [&](const Extent &e, std::uint64_t at, std::uint64_t n, std::uint64_t done) {
			       io_uring_sqe *sqe = next_sqe();
			       void *addr = reinterpret_cast<void *>(at);
			       const int slot = int(e.backing & detail::kSlotMask);
			       /* READ_FIXED moves wire -> memory (the NIC writes),
				* WRITE_FIXED memory -> wire (the NIC reads). */
			       if (to_memory) {
				       io_uring_prep_read_fixed(sqe, kWireFile, addr, unsigned(n),
								wire + done, slot);
				       slots[slot].written.store(true, std::memory_order_relaxed);
			       }
			       else {
				       io_uring_prep_write_fixed(sqe, kWireFile, addr, unsigned(n),
								 wire + done, slot);
			       }
			       /* IOSQE_ASYNC: the copy runs on io-wq, not inline in
				* io_uring_enter under the submission lock, so a large
				* transfer neither delays map() nor other submitters --
				* and DMA runs beside the CPU, as on a NIC. */
			       sqe->flags |= IOSQE_FIXED_FILE | (async ? IOSQE_ASYNC : 0);
			       io_uring_sqe_set_data64(sqe, idx);
			       counters.sqes++;
			       return true;
		       });
}

io_uring_sqe *Hca::Impl::next_sqe()
{
	io_uring_sqe *sqe = io_uring_get_sqe(ring.get());
	while (!sqe) {
		flush_sq();
		sqe = io_uring_get_sqe(ring.get());
	}
	return sqe;
}

void Hca::Impl::flush_sq()
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
		MRSYNC_LOG(error, "uring", "io_uring_submit: %s; %u SQEs stay queued for the next submit",
				  detail::errno_text(-rc).c_str(), io_uring_sq_ready(ring.get()));
		return;
	}
}

} // namespace mrsync::uring
