/* SPDX-License-Identifier: MIT */
/* The engine's burst path. write()/read() cost one io_uring_enter, one kernel
 * operation and one completion wait per request. A burst moves in rounds,
 * and a round is one request: one reservation, one staging run that all its
 * operations share, one hold of the submission lock in which every operation
 * is translated and checked (as write() does: the lock drivers swap
 * translations and unpin() retires slots under) and one io_uring_submit,
 * then one wait. The pieces of the operations that passed are packed into as
 * few SQEs as the kernel allows: with READV/WRITEV_FIXED, one SQE per run of
 * pieces on the same backing, in the same direction, adjacent on the wire. */
#include "engine_pvt.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>

namespace mrsync::dma {

namespace {

using detail::fmt;
using detail::kWireFile;
using detail::Progress;

/* SQEs of this many bytes or fewer run inline in the submitting
 * io_uring_enter (when the file allows), as a hand-off to io-wq costs more. */
constexpr std::uint64_t kInlineBytes = 4096;
/* A round waits for its own DMA as fence() does: long, since returning
 * earlier would leave the kernel writing into the round's staging. */
constexpr auto kRoundWait = std::chrono::minutes(1);
/* The kernel's limit on iovecs per vectored request (UIO_MAXIOV). */
constexpr std::uint32_t kMaxIovPerSqe = 1024;

} // namespace

/** One round's plan and results; on the burst's stack, so nothing is
 *  allocated. Capacities bound a round; a burst is any number of rounds. */
struct Engine::Impl::Round {
	static constexpr std::size_t kOps = 256;
	/* Pieces: enough for one largest request split at every page. */
	static constexpr std::size_t kPieces = kMaxRequestBytes / kPageBytes + 16;

	struct Group { /* one SQE */
		std::uint64_t wire = 0; /* staging offset of its first byte */
		std::uint32_t slot = 0;
		std::uint32_t first = 0, count = 0; /* its iovecs */
		std::uint32_t bytes = 0;
		bool into_memory = true;
	};

	std::size_t n = 0;          /* operations in this round */
	std::uint64_t bytes = 0;    /* their staging bytes */
	std::uint32_t req = 0;      /* the round's request, if bytes */
	std::uint64_t wire[kOps];   /* each operation's staging offset in the round */
	std::uint32_t first_sqe[kOps], last_sqe[kOps];
	bool live[kOps];            /* submitted (not refused) */
	std::uint32_t ngroups = 0, npieces = 0;
	iovec iov[kPieces];
	Group groups[kPieces];
	int sqe_results[kPieces];
};

Status Engine::burst(std::span<const DmaOp> ops, std::span<int> results)
{
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, fmt("%s burst: abandoned (fork child)",
						  impl_->options.name));
	if (results.size() < ops.size())
		return make_error(EINVAL, fmt("%s burst: results has %zu entries for %zu operations",
					       impl_->options.name, results.size(), ops.size()));
	/* ~60 KiB: a member would serialise bursts, the stack of a small
	 * thread may not hold it; one per thread, allocated on first use. */
	thread_local std::unique_ptr<Impl::Round> round;
	if (!round)
		round = std::make_unique_for_overwrite<Impl::Round>();
	for (std::size_t done = 0; done < ops.size();) {
		auto n = impl_->burst_round(ops.subspan(done), results.subspan(done), *round);
		if (!n) {
			std::fill(results.begin() + std::ptrdiff_t(done), results.end(), -ECANCELED);
			return std::move(n).error();
		}
		done += *n;
	}
	return {};
}

Result<std::size_t> Engine::Impl::burst_round(std::span<const DmaOp> ops, std::span<int> results,
					   Round &r)
{
	/* Plan: which operations fit, and each one's place on the wire --
	 * writes first, then reads, each kind contiguous so runs can merge. */
	r.n = 0;
	r.bytes = 0;
	std::size_t pieces = 0;
	for (; r.n < ops.size() && r.n < Round::kOps; ++r.n) {
		const DmaOp &op = ops[r.n];
		r.live[r.n] = false;
		if (op.len == 0 || op.len > kMaxRequestBytes) {
			results[r.n] = op.len ? -EMSGSIZE : -EINVAL;
			continue;
		}
		const std::size_t worst = op.len / kPageBytes + 2;
		if (r.n && (pieces + worst > Round::kPieces || r.bytes + op.len > kMaxRequestBytes))
			break;
		pieces += worst;
		r.bytes += op.len;
	}
	std::uint64_t at = 0;
	for (const bool into : {true, false})
		for (std::size_t i = 0; i < r.n; ++i)
			if (ops[i].len && ops[i].len <= kMaxRequestBytes && ops[i].into_memory == into) {
				r.wire[i] = at;
				at += ops[i].len;
			}
	if (r.bytes == 0)
		return r.n;

	auto reserved = reserve(r.bytes, 0);
	if (!reserved)
		return std::move(reserved).error();
	r.req = *reserved;
	detail::Request &req = reqs[r.req];
	req.burst = true;
	req.sqe_results = r.sqe_results;
	counters.inflight--; /* wait_one() must not wait for a burst */
	std::byte *const base = staging.data() + req.chunk * detail::kChunk;
	for (std::size_t i = 0; i < r.n; ++i)
		if (ops[i].into_memory && ops[i].len && ops[i].len <= kMaxRequestBytes)
			std::memcpy(base + r.wire[i], ops[i].buf, ops[i].len);

	{
		std::lock_guard lock(submit_mu);
		launch_round(ops, results, r);
		flush_sq();
	}
	auto ended = [&] {
		return req.state.load(std::memory_order_acquire) == detail::ReqState::Done
			       ? Progress::Done
			       : Progress::Pending;
	};
	if (auto st = reap_until(ended, detail::Clock::now() + kRoundWait, "the burst's DMA"); !st) {
		/* The kernel still owns the round: its request and staging stay
		 * reserved (lost) rather than be reused under the kernel. */
		MRSYNC_LOG(error, options.name, "burst: DMA did not complete within a minute; its "
					   "request stays reserved");
		return std::move(st).error();
	}
	settle_round(ops, results, r);
	return r.n;
}

void Engine::Impl::launch_round(std::span<const DmaOp> ops, std::span<int> results, Round &r)
{
	detail::Request &req = reqs[r.req];
	const std::uint64_t base = req.chunk * detail::kChunk;
	const std::uint32_t per_sqe = vectored_fixed ? kMaxIovPerSqe : 1;
	r.ngroups = r.npieces = 0;
	for (const bool into : {true, false}) {
		for (std::size_t i = 0; i < r.n; ++i) {
			const DmaOp &op = ops[i];
			if (op.into_memory != into || op.len == 0 || op.len > kMaxRequestBytes)
				continue;
			int refusal = translate(op.lkey, op.va, op.len, into);
			/* A translator finer than pages may need more room than the
			 * plan gave: such an operation is refused, not truncated. */
			if (!refusal && pieces.size() > Round::kPieces - r.npieces)
				refusal = EMSGSIZE;
			counters.dma_submitted++;
			if (refusal) {
				counters.dma_refused++;
				results[i] = -refusal;
				continue;
			}
			r.live[i] = true;
			bool moves = false; /* some piece has an SQE */
			std::uint64_t done = 0;
			for (const Piece &p : pieces) {
				const std::uint64_t wire = base + r.wire[i] + done;
				done += p.len;
				if (p.backing == kDiscard) {
					if (!into) /* reads zeros, as write()/read() */
						std::memset(staging.data() + wire, 0, p.len);
					continue;
				}
				const auto slot = std::uint32_t(p.backing & detail::kSlotMask);
				Round::Group *g = r.ngroups ? &r.groups[r.ngroups - 1] : nullptr;
				if (!g || g->slot != slot || g->into_memory != into ||
				    g->wire + g->bytes != wire || g->count == per_sqe) {
					g = &r.groups[r.ngroups++];
					*g = {.wire = wire, .slot = slot, .first = r.npieces,
					      .into_memory = into};
				}
				r.iov[r.npieces++] = {reinterpret_cast<void *>(p.va), p.len};
				g->count++;
				g->bytes += std::uint32_t(p.len);
				/* Its first group may be one an earlier operation
				 * opened and this one joined: settle_round checks
				 * whole groups. */
				if (!std::exchange(moves, true))
					r.first_sqe[i] = r.ngroups - 1;
				if (into)
					slots[slot].written.store(true, std::memory_order_relaxed);
			}
			/* Only discarded pieces: no group to check (first > last). */
			r.first_sqe[i] = moves ? r.first_sqe[i] : 1;
			r.last_sqe[i] = moves ? r.ngroups - 1 : 0;
		}
	}
	req.seq = ++seq;
	req.transferred = 0;
	req.result = 0;
	if (r.ngroups == 0) { /* all refused: nothing for the kernel */
		req.state.store(detail::ReqState::Done, std::memory_order_release);
		return;
	}
	req.pending = r.ngroups;
	counters.launched.fetch_add(1, std::memory_order_relaxed);
	req.state.store(detail::ReqState::InFlight, std::memory_order_release);
	for (std::uint32_t s = 0; s < r.ngroups; ++s) {
		const Round::Group &g = r.groups[s];
		io_uring_sqe *sqe = next_sqe();
		if (g.count == 1 && g.into_memory)
			io_uring_prep_read_fixed(sqe, kWireFile, r.iov[g.first].iov_base, g.bytes,
						 g.wire, int(g.slot));
		else if (g.count == 1)
			io_uring_prep_write_fixed(sqe, kWireFile, r.iov[g.first].iov_base, g.bytes,
						  g.wire, int(g.slot));
		else {
			io_uring_prep_rw(g.into_memory ? detail::kOpReadvFixed : detail::kOpWritevFixed,
					 sqe, kWireFile, &r.iov[g.first], g.count, g.wire);
			sqe->buf_index = std::uint16_t(g.slot);
		}
		sqe->flags |= IOSQE_FIXED_FILE | (g.bytes > kInlineBytes ? IOSQE_ASYNC : 0);
		io_uring_sqe_set_data64(sqe, r.req | std::uint64_t(s) << detail::kSqeShift);
		counters.sqes++;
	}
}

void Engine::Impl::settle_round(std::span<const DmaOp> ops, std::span<int> results, Round &r)
{
	detail::Request &req = reqs[r.req];
	const std::byte *base = staging.data() + req.chunk * detail::kChunk;
	for (std::size_t i = 0; i < r.n; ++i) {
		if (!r.live[i])
			continue;
		int res = int(ops[i].len);
		for (std::uint32_t s = r.first_sqe[i]; s <= r.last_sqe[i]; ++s) {
			const int got = r.sqe_results[s];
			if (got < 0 || std::uint32_t(got) != r.groups[s].bytes) {
				/* A short transfer cannot happen on a sized memfd;
				 * if it ever did, it must not look successful. */
				res = got < 0 ? got : -EIO;
				break;
			}
		}
		if (res > 0 && !ops[i].into_memory)
			std::memcpy(ops[i].buf, base + r.wire[i], ops[i].len);
		results[i] = res;
		counters.dma_completed++;
	}
	for (std::size_t i = 0; i < r.n; ++i) /* refused by translation: ended too */
		if (!r.live[i] && ops[i].len && ops[i].len <= kMaxRequestBytes)
			counters.dma_completed++;
	req.sqe_results = nullptr;
	req.burst = false;
	std::lock_guard lock(pool_mu);
	chunks.free(req.chunk, req.nchunks);
	req.state.store(detail::ReqState::Free, std::memory_order_relaxed);
	free_reqs.push_back(r.req);
}

} // namespace mrsync::dma
