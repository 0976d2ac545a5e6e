/* SPDX-License-Identifier: MIT */
/* The HCA's burst path: write()/read() pay one io_uring_enter and one
 * completion wait per request; a burst reserves all its requests under one
 * pool lock, crosses the wire outside any lock, translates and submits them
 * all under one hold of the submission lock with one io_uring_submit, and
 * waits for all of them in one reap. The translation rules are write()'s:
 * each operation is checked right before the submit that carries it, under
 * the lock map() and unpin() retire translations under. */
#include "uring_pvt.hpp"

#include <array>
#include <cstring>

namespace mrsync::uring {

namespace {

using detail::fmt;
using detail::Progress;

/* An operation its arguments refused: it has a result and no request. */
constexpr std::uint32_t kNoRequest = ~0u;
/* Operations this small run inline in the submitting io_uring_enter: the
 * copy costs less than handing it to an io-wq worker, and holds the
 * submission lock no longer than that hand-off would. */
constexpr std::uint64_t kInlineBytes = 4096;
/* A burst waits for its own DMA as fence() does: long, since returning
 * earlier would leave the kernel filling the caller's read buffers. */
constexpr auto kBurstWait = std::chrono::minutes(1);

} // namespace

Status Hca::burst(std::span<const DmaOp> ops, std::span<int> results)
{
	if (impl_->abandoned)
		return make_error(ESHUTDOWN, "uring burst: the HCA was abandoned (fork child)");
	if (results.size() < ops.size())
		return make_error(EINVAL, fmt("uring burst: results has %zu entries for %zu operations",
					       results.size(), ops.size()));
	std::array<std::uint32_t, detail::kSqEntries> idx;
	for (std::size_t done = 0; done < ops.size();) {
		auto n = impl_->burst_round(ops.subspan(done), results.subspan(done), idx);
		if (!n) {
			for (std::size_t i = done; i < ops.size(); ++i)
				results[i] = -ECANCELED;
			return std::move(n).error();
		}
		done += *n;
	}
	return {};
}

std::size_t Hca::Impl::reserve_burst(std::span<const DmaOp> ops, std::span<int> results,
				     std::span<std::uint32_t> idx)
{
	std::size_t n = 0;
	std::lock_guard lock(pool_mu);
	for (; n < ops.size() && n < idx.size(); ++n) {
		const DmaOp &op = ops[n];
		if (op.len == 0 || op.len > kMaxRequestBytes) {
			results[n] = op.len ? -EMSGSIZE : -EINVAL;
			idx[n] = kNoRequest;
			continue;
		}
		const auto nchunks = std::uint32_t((op.len + detail::kChunk - 1) / detail::kChunk);
		std::uint32_t first = 0;
		if (free_reqs.empty() || !chunks.alloc(nchunks, first))
			break;
		idx[n] = free_reqs.back();
		free_reqs.pop_back();
		detail::Request &req = reqs[idx[n]];
		req.user_data = n;
		req.len = op.len;
		req.chunk = first;
		req.nchunks = nchunks;
		req.dst = op.into_memory ? nullptr : op.buf;
		req.burst = true;
		req.state.store(detail::ReqState::Reserved, std::memory_order_release);
	}
	return n;
}

Result<std::size_t> Hca::Impl::burst_round(std::span<const DmaOp> ops, std::span<int> results,
					   std::span<std::uint32_t> idx)
{
	std::size_t n = reserve_burst(ops, results, idx);
	if (n == 0) {
		/* Nothing free: requests and staging come back as DMA completes
		 * (or as poll() collects), so wait for room for one operation. */
		auto one = [&] {
			return reserve_burst(ops.first(1), results, idx) ? Progress::Done
									 : Progress::Pending;
		};
		if (auto st = reap_until(one, detail::Clock::now() + kDefaultWait,
					 "a free request and staging space");
		    !st)
			return std::move(st).error();
		n = 1;
	}
	for (std::size_t i = 0; i < n; ++i)
		if (idx[i] != kNoRequest && ops[i].into_memory)
			std::memcpy(staging.data() + reqs[idx[i]].chunk * detail::kChunk, ops[i].buf,
				    ops[i].len);
	{
		std::lock_guard lock(submit_mu);
		for (std::size_t i = 0; i < n; ++i)
			if (idx[i] != kNoRequest)
				launch(idx[i], ops[i].lkey, ops[i].va, ops[i].into_memory,
				       ops[i].len > kInlineBytes);
		flush_sq();
	}

	std::size_t ended = 0; /* operations [0, ended) have completed */
	auto all = [&] {
		while (ended < n && (idx[ended] == kNoRequest ||
				     reqs[idx[ended]].state.load(std::memory_order_acquire) ==
					     detail::ReqState::Done))
			++ended;
		return ended == n ? Progress::Done : Progress::Pending;
	};
	if (auto st = reap_until(all, detail::Clock::now() + kBurstWait, "the burst's DMA"); !st) {
		/* The kernel still owns these requests: they keep their slots
		 * (lost), but must not copy into the caller's buffers later. */
		std::lock_guard lock(reap_mu);
		for (std::size_t i = 0; i < n; ++i)
			if (idx[i] != kNoRequest)
				reqs[idx[i]].dst = nullptr;
		MRSYNC_LOG(error, "uring", "burst: DMA did not complete within a minute; its "
					   "requests stay reserved");
		return std::move(st).error();
	}
	std::lock_guard lock(pool_mu);
	for (std::size_t i = 0; i < n; ++i) {
		if (idx[i] == kNoRequest)
			continue;
		detail::Request &req = reqs[idx[i]];
		results[i] = req.result;
		req.burst = false;
		req.state.store(detail::ReqState::Free, std::memory_order_relaxed);
		free_reqs.push_back(idx[i]);
	}
	return n;
}

} // namespace mrsync::uring
