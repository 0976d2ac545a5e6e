/* SPDX-License-Identifier: MIT */
/* The verbs driver (include/mrsync/verbs.h, docs/verbs.md): backings are
 * pinning MRs, a registration is one MR over its whole area, a resync
 * re-registers in place where the device can and otherwise registers anew
 * and retires the old MR until the application's quiesce says no work
 * request can still name it. */
#include <sys/mman.h>

#include <infiniband/verbs.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include <mrsync/driver.hpp>
#include <mrsync/log.hpp>
#include <mrsync/mrsync.hpp>
#include <mrsync/verbs.h>

#include "capi.hpp"  /* lib/core: the C error channel */
#include "format.hpp"
#include "sized.hpp" /* lib/core: the struct_size rule */

namespace mrsync::verbs {
namespace {

using detail::errno_text;
using detail::fmt;

std::string range_text(std::uint64_t va, std::uint64_t len)
{
	return fmt("[0x%" PRIx64 ", +0x%" PRIx64 ")", va, len);
}

int ibv_access(std::uint32_t access)
{
	int flags = 0;
	if (access & (MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_WRITE))
		flags |= IBV_ACCESS_LOCAL_WRITE; /* remote write requires it */
	if (access & MRSYNC_ACCESS_REMOTE_WRITE)
		flags |= IBV_ACCESS_REMOTE_WRITE;
	if (access & MRSYNC_ACCESS_REMOTE_READ)
		flags |= IBV_ACCESS_REMOTE_READ;
	return flags;
}

/* A registration's keys as one map key: lkey in the low half, rkey in the
 * high half, the layout of the core's pack_keys(). */
std::uint64_t registration_key(Keys k)
{
	return std::uint64_t(k.lkey) | (std::uint64_t(k.rkey) << 32);
}

/* The driver's device and PD: the application's, or opened here. */
struct Device {
	ibv_context *context = nullptr; /* ours to close, or null */
	ibv_pd *pd = nullptr;
	bool own_pd = false;
};

class VerbsDriver final : public Driver {
public:
	VerbsDriver(Device device, const mrsync_verbs_params &params)
		: dev_(device), quiesce_(params.quiesce), quiesce_arg_(params.quiesce_arg)
	{
		can_rereg_ = probe_rereg();
		ibv_device_attr attr{};
		if (ibv_query_device(dev_.pd->context, &attr) == 0 && attr.max_mr_size)
			max_mr_size_ = attr.max_mr_size;
	}

	~VerbsDriver() override
	{
		if (abandoned_)
			return; /* the parent's objects: not ours to touch */
		for (auto &[key, reg] : regs_)
			if (reg.mr)
				ibv_dereg_mr(reg.mr);
		deregister_retired();
		for (ibv_mr *mr : pins_)
			if (mr)
				ibv_dereg_mr(mr);
		if (dev_.own_pd)
			ibv_dealloc_pd(dev_.pd);
		if (dev_.context)
			ibv_close_device(dev_.context);
	}

	std::string_view name() const noexcept override { return "verbs"; }

	DriverCaps caps() const noexcept override
	{
		return DriverCaps{
			.entry_granularity = 4096,
			.max_backing_bytes = std::min<std::uint64_t>(max_mr_size_, 1ull << 30),
			.max_backings = 1u << 20,
			.keys_survive_map = false, /* even rereg may hand out new keys */
			.holes_ok = false,         /* one MR covers the area */
		};
	}

	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override
	{
		/* Read-only pin first would pin the zero page of untouched private
		 * memory; the registration needs the pages it will write. */
		ibv_mr *mr = ibv_reg_mr(dev_.pd, reinterpret_cast<void *>(va), len,
					IBV_ACCESS_LOCAL_WRITE);
		if (!mr)
			mr = ibv_reg_mr(dev_.pd, reinterpret_cast<void *>(va), len, 0);
		if (!mr)
			return reg_error("pin", va, len, errno);
		BackingId id;
		if (!free_pins_.empty()) {
			id = free_pins_.back();
			free_pins_.pop_back();
			pins_[id] = mr;
		} else {
			id = BackingId(pins_.size());
			pins_.push_back(mr);
		}
		count_.pin_mrs.fetch_add(1, std::memory_order_relaxed);
		return id;
	}

	void unpin(BackingId backing) noexcept override
	{
		/* A pinning MR's keys are never handed out: no DMA names it. */
		if (backing >= pins_.size() || !pins_[backing])
			return;
		ibv_dereg_mr(pins_[backing]);
		pins_[backing] = nullptr;
		free_pins_.push_back(backing);
		count_.pin_mrs.fetch_sub(1, std::memory_order_relaxed);
	}

	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> translation) override
	{
		Registration reg{va, len, ibv_access(access), nullptr};
		Keys keys;
		if (complete(translation)) {
			reg.mr = ibv_reg_mr(dev_.pd, reinterpret_cast<void *>(va), len, reg.access);
			if (!reg.mr)
				return reg_error("register", va, len, errno);
			keys = {reg.mr->lkey, reg.mr->rkey};
		} else {
			keys = hole_keys();
		}
		regs_.emplace(registration_key(keys), reg);
		count_.mrs.fetch_add(reg.mr != nullptr, std::memory_order_relaxed);
		return keys;
	}

	Result<Keys> map(Keys keys, std::span<const Extent> translation) override
	{
		auto it = regs_.find(registration_key(keys));
		if (it == regs_.end())
			return make_error(EINVAL, "verbs map: unknown keys");
		Registration reg = it->second;
		const bool had_mr = reg.mr != nullptr;
		Keys fresh;
		if (!complete(translation)) {
			/* Unmapped pages: no MR can cover the area. The old one
			 * goes (after the fence); lkey 0 = no access at all. */
			retire(reg.mr);
			reg.mr = nullptr;
			fresh = hole_keys();
		} else if (reg.mr && can_rereg_ &&
			   ibv_rereg_mr(reg.mr, IBV_REREG_MR_CHANGE_TRANSLATION, dev_.pd,
					reinterpret_cast<void *>(reg.va), reg.len, reg.access) == 0) {
			fresh = {reg.mr->lkey, reg.mr->rkey};
			count_.rereg.fetch_add(1, std::memory_order_relaxed);
		} else {
			ibv_mr *mr = ibv_reg_mr(dev_.pd, reinterpret_cast<void *>(reg.va), reg.len,
						reg.access);
			if (!mr)
				return reg_error("re-register", reg.va, reg.len, errno);
			retire(reg.mr);
			reg.mr = mr;
			fresh = {mr->lkey, mr->rkey};
			count_.reg_dereg.fetch_add(1, std::memory_order_relaxed);
		}
		regs_.erase(it);
		regs_.emplace(registration_key(fresh), reg);
		if (had_mr && !reg.mr)
			count_.mrs.fetch_sub(1, std::memory_order_relaxed);
		else if (!had_mr && reg.mr)
			count_.mrs.fetch_add(1, std::memory_order_relaxed);
		return fresh;
	}

	void destroy(Keys keys) noexcept override
	{
		auto it = regs_.find(registration_key(keys));
		if (it == regs_.end())
			return;
		if (it->second.mr) {
			ibv_dereg_mr(it->second.mr); /* contract: no DMA uses it any more */
			count_.mrs.fetch_sub(1, std::memory_order_relaxed);
		}
		regs_.erase(it);
	}

	Status fence() override
	{
		if (!quiesce_)
			return {}; /* retired MRs wait for mrsync_verbs_quiesced() */
		if (int rc = quiesce_(quiesce_arg_); rc < 0)
			return make_error(-rc, "verbs fence: the application's quiesce callback "
					       "failed: " + errno_text(-rc));
		deregister_retired();
		return {};
	}

	void abandon() noexcept override { abandoned_ = true; }

	/* mrsync_verbs_quiesced(): any thread. */
	int quiesced() noexcept { return deregister_retired(); }

	/* mrsync_verbs_get_stats(): any thread, also while the core creates
	 * and maps under its lock. It reads the counters those keep and the
	 * retired list (under its lock), never regs_ or pins_. */
	mrsync_verbs_stats stats() noexcept
	{
		mrsync_verbs_stats s{};
		s.mrs = count_.mrs.load(std::memory_order_relaxed);
		s.pin_mrs = count_.pin_mrs.load(std::memory_order_relaxed);
		s.rereg = count_.rereg.load(std::memory_order_relaxed);
		s.reg_dereg = count_.reg_dereg.load(std::memory_order_relaxed);
		std::lock_guard lock(retired_mu_);
		s.retired_mrs = retired_.size();
		s.retired_bytes = 0;
		for (ibv_mr *mr : retired_)
			s.retired_bytes += mr->length;
		s.can_rereg = can_rereg_;
		return s;
	}

private:
	struct Registration {
		std::uint64_t va, len;
		int access;
		ibv_mr *mr; /* null while the area has unmapped pages */
	};

	static bool complete(std::span<const Extent> translation)
	{
		for (const Extent &e : translation)
			if (e.backing == kNoBacking)
				return false;
		return true;
	}

	/* Keys of a registration without an MR: lkey 0 names nothing on the
	 * device; the rkey only keeps the handle unique. */
	Keys hole_keys() noexcept { return {0, 0x80000000u | next_hole_++}; }

	Error reg_error(const char *what, std::uint64_t va, std::uint64_t len, int err)
	{
		std::string why = errno_text(err);
		if (err == EFAULT)
			why = "not mapped or not pinnable";
		else if (err == ENOMEM)
			why = "out of memory or RLIMIT_MEMLOCK (ulimit -l)";
		else if (err == EIO || err == ENODEV)
			why = "the device is gone (" + why + ")";
		return Error{err ? err : EIO,
			     std::string("verbs ") + what + " " + range_text(va, len) + ": " + why};
	}

	void retire(ibv_mr *mr)
	{
		if (!mr)
			return;
		std::lock_guard lock(retired_mu_);
		retired_.push_back(mr);
	}

	int deregister_retired() noexcept
	{
		std::vector<ibv_mr *> gone;
		{
			std::lock_guard lock(retired_mu_);
			gone.swap(retired_);
		}
		for (ibv_mr *mr : gone)
			if (int rc = ibv_dereg_mr(mr))
				MRSYNC_LOG(warning, "verbs", "ibv_dereg_mr: %s", errno_text(rc).c_str());
		return int(gone.size());
	}

	/* ibv_rereg_mr with CHANGE_TRANSLATION on a scratch page: devices
	 * without it (Soft-RoCE on 6.1) say EOPNOTSUPP. */
	bool probe_rereg()
	{
		void *page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				  -1, 0);
		if (page == MAP_FAILED)
			return false;
		std::memset(page, 0, 4096);
		bool ok = false;
		if (ibv_mr *mr = ibv_reg_mr(dev_.pd, page, 4096, IBV_ACCESS_LOCAL_WRITE)) {
			ok = ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_TRANSLATION, dev_.pd, page, 4096,
					  IBV_ACCESS_LOCAL_WRITE) == 0;
			ibv_dereg_mr(mr);
		}
		munmap(page, 4096);
		return ok;
	}

	Device dev_;
	int (*quiesce_)(void *);
	void *quiesce_arg_;
	bool can_rereg_ = false;
	bool abandoned_ = false;
	std::uint64_t max_mr_size_ = 1ull << 30;
	std::vector<ibv_mr *> pins_;
	std::vector<BackingId> free_pins_;
	std::unordered_map<std::uint64_t, Registration> regs_; /* by registration_key() */
	std::uint32_t next_hole_ = 1;
	std::mutex retired_mu_; /* retired_: quiesced() and stats() run on any thread */
	std::vector<ibv_mr *> retired_;
	/* What stats() reports of the containers above, kept by the calls that
	 * change them (under the core's lock), read by stats() on any thread. */
	struct Counters {
		std::atomic<std::uint64_t> mrs{0};     /* regs_ with an MR */
		std::atomic<std::uint64_t> pin_mrs{0}; /* live entries of pins_ */
		std::atomic<std::uint64_t> rereg{0};
		std::atomic<std::uint64_t> reg_dereg{0};
	} count_;
};

bool verbs_available(std::string &why)
{
	int n = 0;
	ibv_device **list = ibv_get_device_list(&n);
	if (list)
		ibv_free_device_list(list);
	if (n > 0)
		return true;
	why = "no RDMA device (ibv_get_device_list is empty; for Soft-RoCE: modprobe rdma_rxe "
	      "and rdma link add rxe0 type rxe netdev <if>)";
	return false;
}

Result<Device> open_device(const char *wanted)
{
	if (!wanted)
		wanted = std::getenv("MRSYNC_VERBS_DEVICE");
	int n = 0;
	ibv_device **list = ibv_get_device_list(&n);
	if (!list || n == 0) {
		if (list)
			ibv_free_device_list(list);
		return make_error(ENODEV, "verbs: no RDMA device");
	}
	ibv_device *chosen = nullptr;
	for (int i = 0; i < n && !chosen; ++i)
		if (!wanted || std::strcmp(ibv_get_device_name(list[i]), wanted) == 0)
			chosen = list[i];
	Device d;
	if (chosen)
		d.context = ibv_open_device(chosen);
	ibv_free_device_list(list);
	if (!chosen)
		return make_error(ENODEV, std::string("verbs: device '") + wanted + "' not found "
					  "(params->device or MRSYNC_VERBS_DEVICE)");
	if (!d.context)
		return make_error(errno ? errno : ENODEV, "verbs: ibv_open_device failed");
	d.pd = ibv_alloc_pd(d.context);
	if (!d.pd) {
		ibv_close_device(d.context);
		return make_error(errno ? errno : ENOMEM, "verbs: ibv_alloc_pd failed");
	}
	d.own_pd = true;
	return d;
}

Result<std::unique_ptr<Driver>> verbs_create(const DriverConfig &config)
{
	mrsync_verbs_params params = MRSYNC_VERBS_PARAMS_INIT;
	if (config.arg) {
		const auto *given = static_cast<const mrsync_verbs_params *>(config.arg);
		/* the struct_size rule of mrsync.h: older, smaller structs too */
		if (const char *why = mrsync::detail::copy_in(
			    given, given->struct_size, offsetof(mrsync_verbs_params, pd), params))
			return make_error(EINVAL, "params->driver_arg: struct mrsync_verbs_params has "
						  "struct_size " + std::to_string(given->struct_size) +
						  ": " + why + " (initialise it with "
						  "MRSYNC_VERBS_PARAMS_INIT)");
		params.struct_size = sizeof params;
		if (params.reserved)
			return make_error(EINVAL, "params->driver_arg: reserved must be 0");
	}
	Device dev;
	if (params.pd) {
		dev.pd = params.pd;
	} else {
		auto opened = open_device(params.device);
		if (!opened)
			return std::move(opened).error();
		dev = *opened;
	}
	try {
		return std::unique_ptr<Driver>(std::make_unique<VerbsDriver>(dev, params));
	} catch (const std::bad_alloc &) {
		return make_error(ENOMEM, "verbs: out of memory");
	}
}

const DriverFactory verbs_factory{
	.name = "verbs",
	.available = verbs_available,
	.create = verbs_create,
};

VerbsDriver *verbs_of(mrsync_ctx *ctx)
{
	return ctx ? dynamic_cast<VerbsDriver *>(&driver_of(ctx)) : nullptr;
}

} // namespace
} // namespace mrsync::verbs

MRSYNC_REGISTER_DRIVER(mrsync::verbs::verbs_factory)

/* The error channel of mrsync.h: -errno and mrsync_last_error(). */
extern "C" int mrsync_verbs_quiesced(struct mrsync_ctx *ctx)
{
	auto *d = mrsync::verbs::verbs_of(ctx);
	if (!d)
		return mrsync::detail::fail_call(EINVAL, !ctx ? "mrsync_verbs_quiesced: ctx is NULL"
							      : "mrsync_verbs_quiesced: ctx is not a "
								"verbs context");
	return d->quiesced();
}

extern "C" int mrsync_verbs_get_stats(struct mrsync_ctx *ctx, struct mrsync_verbs_stats *out,
				      size_t out_size)
{
	auto *d = mrsync::verbs::verbs_of(ctx);
	if (!d || !out || out_size < sizeof(std::uint64_t))
		return mrsync::detail::fail_call(
			EINVAL, !ctx   ? "mrsync_verbs_get_stats: ctx is NULL"
				: !d   ? "mrsync_verbs_get_stats: ctx is not a verbs context"
				: !out ? "mrsync_verbs_get_stats: out is NULL"
				       : "mrsync_verbs_get_stats: out_size is below 8: pass "
					 "sizeof(struct mrsync_verbs_stats)");
	mrsync::detail::copy_out(d->stats(), out, out_size);
	return 0;
}
