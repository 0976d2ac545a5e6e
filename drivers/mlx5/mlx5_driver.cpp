/* SPDX-License-Identifier: MIT */
/* The mlx5 driver logic (mlx5_driver.hpp): backings are chunk MRs,
 * registrations are two-level indirect keys rewritten by UMR. */
#include "mlx5_driver.hpp"

#include <algorithm>
#include <cinttypes>
#include <thread>

#include <mrsync/log.hpp>
#include <mrsync/mrsync.h>

#include "format.hpp"

namespace mrsync::mlx5 {

using ::mrsync::detail::fmt;

namespace {

constexpr std::uint64_t kPage = 4096;
/* parent -> child -> leaf, and a hole's child entry -> the poison key */
constexpr std::uint32_t kDepthNeeded = 3;
constexpr std::uint32_t kMaxBackings = 1u << 20;
constexpr unsigned kMaxRecoveries = 3;
/* A chunk MR may straddle windows (its KLMs are sub-ranges). 1 GiB, not the
 * window: a 64 GiB registration has 2 GiB windows, which 32 MiB chunks would
 * fill with 64 entries, more than a UMR holds; 1 GiB chunks leave a window
 * at 2 or 3 entries plus the splices of its changed pages. */
constexpr std::uint64_t kMaxChunk = 1ull << 30;

} // namespace

Mlx5Driver::Mlx5Driver(std::unique_ptr<Device> device, const DeviceCaps &caps,
		       const DriverOptions &options) noexcept
	: device_(std::move(device)), dev_caps_(caps), options_(options)
{
}

Result<std::unique_ptr<Mlx5Driver>> Mlx5Driver::create(std::unique_ptr<Device> device,
						       const DriverOptions &options)
{
	if (!device)
		return make_error(EINVAL, "mlx5: no device");
	if (options.min_window < kPage || options.min_window & (options.min_window - 1) ||
	    options.min_window > kMaxKlmBytes)
		return make_error(EINVAL, fmt("mlx5: min_window %" PRIu64 " is not a power of two "
					      "in [4 KiB, 2 GiB]", options.min_window));
	auto caps = device->query_caps();
	if (!caps)
		return std::move(caps).error();
	const char *missing = nullptr;
	if (caps->umr_indirect_mkey_disabled)
		missing = "umr_indirect_mkey_disabled is set (UMR may not configure indirect keys)";
	else if (caps->max_indirection < kDepthNeeded)
		missing = "max_indirection below 3 (parent, child, poison key of a hole)";
	else if (caps->umr_max_klms < 4)
		missing = "a UMR holds fewer than 4 KLMs";
	if (missing)
		return make_error(EOPNOTSUPP, fmt("mlx5 on %s: %s", std::string(device->name()).c_str(),
						  missing));
	std::unique_ptr<Mlx5Driver> d(new Mlx5Driver(std::move(device), *caps, options));
	/* Never configured: a KLM naming it fails the access. */
	auto poison = d->device_->create_mkey(4);
	if (!poison)
		return std::move(poison).error();
	d->poison_ = *poison;
	return d;
}

Mlx5Driver::~Mlx5Driver()
{
	if (abandoned_)
		return;
	(void)wait_outstanding();
	for (std::uint32_t key : all_keys_)
		(void)device_->destroy_mkey(key);
	if (poison_)
		(void)device_->destroy_mkey(poison_);
	for (std::size_t i = 0; i < backings_.size(); ++i)
		if (backings_[i].key)
			(void)device_->dereg_mr(backings_[i].key);
}

DriverCaps Mlx5Driver::caps() const noexcept
{
	return DriverCaps{.entry_granularity = kPage,
			  .max_backing_bytes = kMaxChunk,
			  .max_backings = kMaxBackings,
			  .keys_survive_map = true,
			  .holes_ok = options_.poison_refused};
}

std::uint64_t Mlx5Driver::window_for(std::uint64_t len) const noexcept
{
	std::uint64_t w = options_.min_window;
	while ((len + w - 1) / w > dev_caps_.umr_max_klms)
		w *= 2;
	return w;
}

Result<BackingId> Mlx5Driver::pin(std::uint64_t va, std::uint64_t len)
{
	if (len == 0 || va % kPage || len % kPage || len > kMaxChunk)
		return make_error(EINVAL, fmt("mlx5 pin [%#" PRIx64 ", +%#" PRIx64 "): not page-aligned, "
					      "empty or above 1 GiB", va, len));
	/* Remote rights on the leaf too: whether the hardware checks them
	 * behind an indirect key is one of test/hw/mlx5's findings. */
	auto mr = device_->reg_mr(va, len, MRSYNC_ACCESS_ALL);
	if (!mr)
		return std::move(mr).error();
	BackingId id;
	if (!free_backings_.empty()) {
		id = free_backings_.back();
		free_backings_.pop_back();
		backings_[id] = *mr;
	} else {
		id = BackingId(backings_.size());
		backings_.push_back(*mr);
	}
	return id;
}

void Mlx5Driver::unpin(BackingId backing) noexcept
{
	if (abandoned_ || backing >= backings_.size() || !backings_[backing].key)
		return;
	if (auto st = device_->dereg_mr(backings_[backing].key); !st)
		MRSYNC_LOG(error, "mlx5", "dereg of chunk MR %#x: %s", backings_[backing].key,
			   st.error().message.c_str());
	backings_[backing] = {};
	free_backings_.push_back(backing);
}

Status Mlx5Driver::check_translation(const Reg &reg, std::span<const Extent> translation) const
{
	std::uint64_t expect = 0;
	for (const Extent &e : translation) {
		if (e.offset != expect || e.length == 0 || e.length % kPage ||
		    e.length > reg.len - expect)
			return make_error(EINVAL, fmt("mlx5 translation: extent at %#" PRIx64 "+%#" PRIx64
						      " is not sorted, contiguous and page-sized within "
						      "%#" PRIx64 " bytes", e.offset, e.length, reg.len));
		expect += e.length;
		if (e.backing == kNoBacking)
			continue;
		const MrHandle *mr = e.backing < backings_.size() ? &backings_[e.backing] : nullptr;
		const std::uint64_t va = reg.va + e.offset;
		if (!mr || !mr->key || va < mr->addr || va + e.length > mr->addr + mr->len)
			return make_error(EINVAL, fmt("mlx5 translation: extent at %#" PRIx64 " names "
						      "backing %u, which is not pinned there",
						      e.offset, e.backing));
	}
	if (expect != reg.len)
		return make_error(EINVAL, fmt("mlx5 translation covers %#" PRIx64 " of %#" PRIx64 " bytes",
					      expect, reg.len));
	return {};
}

/* Whether the fallback of a device that does not refuse DMA through the
 * poison key must keep this translation's key free: it has a hole. */
bool Mlx5Driver::must_revoke(std::span<const Extent> translation) const noexcept
{
	return !options_.poison_refused &&
	       std::any_of(translation.begin(), translation.end(),
			   [](const Extent &e) { return e.backing == kNoBacking; });
}

/* Window w's KLMs: each extent piece is a sub-range of its chunk MR (the
 * splice), a hole names the poison key; neighbours in one MR, or two holes,
 * merge into one entry. */
std::vector<Klm> Mlx5Driver::window_klms(const Reg &reg, std::size_t w,
					  std::span<const Extent> translation) const
{
	const std::uint64_t ws = w * reg.window, we = std::min(reg.len, ws + reg.window);
	std::vector<Klm> list;
	for (const Extent &e : translation) {
		const std::uint64_t from = std::max(ws, e.offset), to = std::min(we, e.offset + e.length);
		if (from >= to)
			continue;
		Klm k{poison_, 0, std::uint32_t(to - from)};
		if (e.backing != kNoBacking)
			k = {backings_[e.backing].key, reg.va + from, std::uint32_t(to - from)};
		if (!list.empty()) {
			Klm &p = list.back();
			const bool joins = p.key == k.key && (k.key == poison_ || p.addr + p.len == k.addr);
			if (joins && std::uint64_t(p.len) + k.len <= kMaxKlmBytes) {
				p.len += k.len;
				continue;
			}
		}
		list.push_back(k);
	}
	return list;
}

/* window_klms(), refused when one UMR cannot hold it. */
Result<std::vector<Klm>> Mlx5Driver::window_list(const Reg &reg, std::size_t w,
						 std::span<const Extent> translation) const
{
	std::vector<Klm> list = window_klms(reg, w, translation);
	if (list.size() > dev_caps_.umr_max_klms)
		return make_error(ENOSPC, fmt("mlx5: window %zu of the registration at %#" PRIx64 " needs "
					      "%zu KLMs, one UMR holds %u: compaction is due",
					      w, reg.va, list.size(), dev_caps_.umr_max_klms));
	return list;
}

std::uint32_t Mlx5Driver::pressure_klms() const noexcept
{
	/* 40 of 52 by default: a resync that splits a chunk around isolated
	 * pages adds two entries per page, so the rest is headroom for a map
	 * whose runs could not be re-pinned (holes, memlock). */
	const std::uint32_t dflt = std::max(1u, dev_caps_.umr_max_klms * 10 / 13);
	return options_.pressure_klms ? std::min(options_.pressure_klms, dev_caps_.umr_max_klms)
				      : dflt;
}

std::vector<Range> Mlx5Driver::crowded(Keys keys, std::span<const Extent> translation) const
{
	auto it = regs_.find(keys.lkey);
	if (options_.test_no_pressure || it == regs_.end() ||
	    !check_translation(it->second, translation))
		return {};
	const Reg &reg = it->second;
	std::vector<Range> windows;
	for (std::size_t w = 0; w < reg.children.size(); ++w)
		if (window_klms(reg, w, translation).size() >= pressure_klms())
			windows.push_back({w * reg.window, std::min(reg.len, (w + 1) * reg.window)});
	return windows;
}

Result<std::uint32_t> Mlx5Driver::take_key()
{
	if (quarantine_.size() > options_.quarantine) {
		const std::uint32_t key = quarantine_.front();
		quarantine_.pop_front();
		stats_.keys_reused++;
		return key;
	}
	auto key = device_->create_mkey(std::uint16_t(dev_caps_.umr_max_klms));
	if (!key)
		return key;
	all_keys_.push_back(*key);
	stats_.keys_created++;
	return key;
}

Status Mlx5Driver::post(UmrSpec spec, std::vector<Klm> klms)
{
	spec.qpn = dev_caps_.umr_qpn;
	spec.wqe_index = pi_;
	spec.small_fence = !options_.test_no_small_fence;
	spec.signaled = true;
	const std::vector<std::byte> wqe = build_umr(spec, klms);
	const std::uint64_t wr = next_wr_++;
	Status st = device_->post_wqe(wqe, wr);
	if (!st && st.error().code == ENOMEM) {
		/* The SQ is full: let it drain, then try once more. */
		if (auto drained = wait_outstanding(); !drained)
			return drained;
		spec.wqe_index = pi_;
		st = device_->post_wqe(build_umr(spec, klms), wr);
	}
	if (!st)
		return st;
	pi_ = std::uint16_t(pi_ + wqe.size() / 64);
	stats_.umrs++;
	stats_.umr_klms += klms.size();
	stats_.umr_bytes += wqe.size();
	outstanding_.emplace(wr, Posted{spec, std::move(klms)});
	return {};
}

Status Mlx5Driver::post_list(std::uint32_t key, std::uint64_t start, std::uint64_t len,
			     std::uint32_t access, std::vector<Klm> klms)
{
	/* The length in 64 bits from the entries: rdma-core 44 summed it in an
	 * int (umr_sg_list_create), wrong from 2 GiB on. */
	UmrSpec spec{.mkey = key, .access = access, .start_addr = start, .len = len};
	return post(spec, std::move(klms));
}

/* The parent: VA-based, one entry per window naming its zero-based child. */
Status Mlx5Driver::post_parent(std::uint32_t key, const Reg &reg)
{
	std::vector<Klm> top;
	for (std::size_t w = 0; w < reg.children.size(); ++w)
		top.push_back({reg.children[w], 0,
			       std::uint32_t(std::min(reg.window, reg.len - w * reg.window))});
	return post_list(key, reg.va, reg.len, reg.access, std::move(top));
}

Status Mlx5Driver::post_invalidate(std::uint32_t key)
{
	return post(UmrSpec{.mkey = key, .invalidate = true}, {});
}

/* Quarantine alone only delays the alias: once the index is handed out
 * again, a peer that kept the old rkey would write into the next
 * registration. A new tag makes the old number fail (REM_ACCESS) for the
 * next 255 reuses, as UCX's mkey pool does. */
Result<std::uint32_t> Mlx5Driver::park(std::uint32_t key)
{
	UmrSpec spec{.mkey = key, .invalidate = true};
	if (dev_caps_.update_tag && !options_.test_no_tag_rotation)
		spec.new_tag = std::uint16_t((key + 1) & 0xff);
	if (auto st = post(spec, {}); !st)
		return std::move(st).error();
	if (spec.new_tag == UmrSpec::kKeepTag)
		return key;
	stats_.keys_retagged++;
	return (key & ~0xffu) | spec.new_tag;
}

/* The fence: every posted UMR's completion, within the bounded wait. An
 * error completion puts the QP in ERR and flushes the rest; once all are
 * in, recover() re-posts the failed and flushed ones. */
Status Mlx5Driver::wait_outstanding()
{
	const auto deadline = std::chrono::steady_clock::now() + options_.fence_timeout;
	std::vector<std::uint64_t> failed;
	unsigned recoveries = 0;
	Cqe cqes[16];
	while (!outstanding_.empty()) {
		const std::size_t n = device_->poll(cqes);
		for (std::size_t i = 0; i < n; ++i) {
			if (cqes[i].status != kWcSuccess) {
				if (cqes[i].status != kWcWrFlushErr)
					MRSYNC_LOG(warning, "mlx5", "UMR completion error %d (vendor %#x): "
						   "recovering", cqes[i].status, cqes[i].vendor_err);
				failed.push_back(cqes[i].wr_id);
				continue;
			}
			outstanding_.erase(cqes[i].wr_id);
		}
		if (!failed.empty() && failed.size() == outstanding_.size()) {
			if (++recoveries > kMaxRecoveries)
				return make_error(EIO, fmt("mlx5: UMRs still fail after %u recoveries; "
							   "the keys' state is unknown", kMaxRecoveries));
			if (auto st = recover(std::exchange(failed, {})); !st)
				return st;
			continue;
		}
		if (n)
			continue;
		if (std::chrono::steady_clock::now() > deadline)
			return make_error(ETIMEDOUT, fmt("mlx5 fence: %zu UMR completions missing after "
							 "%lld ms", outstanding_.size(),
							 (long long)options_.fence_timeout.count()));
		/* A UMR takes microseconds; the data path keeps the CPU meanwhile. */
		std::this_thread::yield();
	}
	return {};
}

/* The kernel's pattern (mlx5r_umr_recover): the QP is drained; reset it to
 * RTS and post again the full list of every key whose UMR failed or was
 * flushed, in the original order. Until then the old and new leaves both
 * stay registered (the core unpins only after a fence that succeeded). */
Status Mlx5Driver::recover(std::vector<std::uint64_t> failed)
{
	stats_.recoveries++;
	if (auto st = device_->reset_qp(); !st)
		return st;
	pi_ = 0;
	std::vector<Posted> again;
	for (std::uint64_t wr : failed) {
		auto it = outstanding_.find(wr);
		if (it == outstanding_.end())
			continue;
		again.push_back(std::move(it->second));
		outstanding_.erase(it);
	}
	for (Posted &p : again)
		if (auto st = post(p.spec, std::move(p.klms)); !st)
			return st;
	return {};
}

Result<Keys> Mlx5Driver::create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
				std::span<const Extent> translation)
{
	Reg reg{.va = va, .len = len, .window = window_for(len), .access = access};
	if (len == 0 || va % kPage || len % kPage || va + len < va || reg.window > kMaxKlmBytes)
		return make_error(EINVAL, fmt("mlx5 create [%#" PRIx64 ", +%#" PRIx64 "): empty, not "
					      "page-aligned, wrapping or above %u windows of 2 GiB",
					      va, len, dev_caps_.umr_max_klms));
	if (access & ~std::uint32_t(MRSYNC_ACCESS_ALL))
		return make_error(EINVAL, fmt("mlx5 create: unknown access bits %#x", access));
	if (auto st = check_translation(reg, translation); !st)
		return std::move(st).error();
	const std::size_t windows = (len + reg.window - 1) / reg.window;
	for (std::size_t w = 0; w < windows; ++w) {
		auto list = window_list(reg, w, translation);
		if (!list)
			return std::move(list).error();
		reg.lists.push_back(std::move(*list));
	}
	auto parent = take_key();
	if (!parent)
		return std::move(parent).error();
	Status st;
	for (std::size_t w = 0; w < windows && st; ++w) {
		auto child = take_key();
		if (!child) {
			st = std::move(child).error();
			break;
		}
		reg.children.push_back(*child);
		const std::uint64_t wlen = std::min(reg.window, len - w * reg.window);
		st = post_list(*child, 0, wlen, access, reg.lists[w]);
	}
	/* Without poison refusal a key with a hole stays free (keys are free
	 * when created or parked); map() configures it once the holes are filled. */
	reg.parent_free = must_revoke(translation);
	if (st && !reg.parent_free)
		st = post_parent(*parent, reg);
	if (st)
		st = wait_outstanding();
	if (!st) {
		for (std::uint32_t key : reg.children)
			quarantine_.push_back(key);
		quarantine_.push_back(*parent);
		return std::move(st).error();
	}
	regs_.emplace(*parent, std::move(reg));
	return Keys{*parent, *parent};
}

Result<Keys> Mlx5Driver::map(Keys keys, std::span<const Extent> translation)
{
	auto it = regs_.find(keys.lkey);
	if (it == regs_.end() || keys.rkey != keys.lkey)
		return make_error(EINVAL, fmt("mlx5 map: unknown keys %#x/%#x", keys.lkey, keys.rkey));
	Reg &reg = it->second;
	if (auto st = check_translation(reg, translation); !st)
		return std::move(st).error();
	/* Every list first, so that a window over capacity changes no entry. */
	std::vector<std::pair<std::size_t, std::vector<Klm>>> changed;
	for (std::size_t w = 0; w < reg.children.size(); ++w) {
		auto list = window_list(reg, w, translation);
		if (!list)
			return revoke(keys.lkey, std::move(list).error());
		if (*list != reg.lists[w])
			changed.emplace_back(w, std::move(*list));
	}
	/* The fallback: a hole appears, the key goes free before the child
	 * UMR points at the poison key (WQEs of the UMR QP run in order). */
	const bool hole = must_revoke(translation);
	if (!changed.empty() && !reg.parent_free && (hole || options_.test_revoke_on_map)) {
		if (auto st = post_invalidate(keys.lkey); !st)
			return std::move(st).error();
		reg.parent_free = true;
	}
	/* Only the windows that changed: one child UMR each, the parent and
	 * the other children untouched. The fence waits for them. */
	for (auto &[w, list] : changed) {
		reg.lists[w] = list;
		const std::uint64_t wlen = std::min(reg.window, reg.len - w * reg.window);
		if (auto st = post_list(reg.children[w], 0, wlen, reg.access, std::move(list)); !st)
			return std::move(st).error();
	}
	/* The children first, then the parent: configured again only when
	 * the list it names has no hole left. */
	if (reg.parent_free && !hole) {
		if (auto st = post_parent(keys.lkey, reg); !st)
			return std::move(st).error();
		reg.parent_free = false;
	}
	/* Wait here too: a lookup that filled holes hands the key out right
	 * after map() with no fence, and DMA posted then must see the new
	 * entries. The UMRs still take effect under DMA in flight. */
	if (!options_.test_no_fence_wait)
		if (auto st = wait_outstanding(); !st)
			return std::move(st).error();
	return keys;
}

/* A map that cannot fit (entry pressure nobody relieved): the core retires
 * the registration, but until it is reclaimed the key would still name the
 * old entries -- pages a resync is replacing -- so a peer's write through it
 * would land there and be lost. Make the parent free instead (same number,
 * every access refused); destroy() parks it later. */
Error Mlx5Driver::revoke(std::uint32_t parent, Error why)
{
	if (options_.test_no_revoke)
		return why;
	MRSYNC_LOG(warning, "mlx5", "%s; revoking key %#x", why.message.c_str(), parent);
	Status st = post_invalidate(parent);
	if (st)
		st = wait_outstanding();
	if (!st)
		MRSYNC_LOG(error, "mlx5", "revoking key %#x: %s", parent, st.error().message.c_str());
	return why;
}

void Mlx5Driver::destroy(Keys keys) noexcept
{
	auto node = regs_.extract(keys.lkey);
	if (!node)
		return;
	Reg &reg = node.mapped();
	/* Free state on every level, so neither the rkey nor a child key
	 * reaches the leaves the core is about to unpin; then park the keys,
	 * each under its next tag. */
	std::vector<std::uint32_t> parked; /* the parent first, then the children */
	Status st;
	for (std::size_t i = 0; i <= reg.children.size() && st; ++i) {
		auto p = park(i == 0 ? keys.lkey : reg.children[i - 1]);
		if (p)
			parked.push_back(*p);
		else
			st = std::move(p).error();
	}
	if (st)
		st = wait_outstanding();
	if (!st) {
		MRSYNC_LOG(error, "mlx5", "invalidating key %#x: %s; its keys are not reused",
			   keys.lkey, st.error().message.c_str());
		return;
	}
	quarantine_.insert(quarantine_.end(), parked.begin(), parked.end());
}

Status Mlx5Driver::fence()
{
	if (abandoned_)
		return make_error(ESHUTDOWN, "mlx5 fence: the driver was abandoned (fork child)");
	if (options_.test_no_fence_wait)
		return {};
	return wait_outstanding();
}

void Mlx5Driver::abandon() noexcept
{
	abandoned_ = true;
	device_->abandon();
}

} // namespace mrsync::mlx5
