/* SPDX-License-Identifier: MIT */
/* The production device (hw_device.hpp). Every libmlx5 object has an owner;
 * the device is built in dependency order and torn down in reverse. */
#include "hw_device.hpp"

#include <endian.h>
#include <infiniband/mlx5dv.h>
#include <infiniband/verbs.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <mrsync/log.hpp>
#include <mrsync/verbs.h>

#include "format.hpp"
#include "mlx5_driver.hpp"
#include "vfio_mode.hpp"

namespace mrsync::mlx5 {

using ::mrsync::detail::errno_text;
using ::mrsync::detail::fmt;

namespace {

/* QUERY_HCA_CAP (PRM; the field offsets as the kernel's mlx5_ifc.h and
 * UCX's ib_mlx5_ifc.h lay out cmd_hca_cap, in bits). */
constexpr std::uint16_t kQueryHcaCap = 0x100;
constexpr std::uint16_t kCapGeneralCur = (0 << 1) | 1;
constexpr std::size_t kCapOutBytes = 0x10 + 0x1000;
struct CapField {
	unsigned bit, width;
};
constexpr CapField kLogMaxMkey{0xea, 6};
constexpr CapField kMaxIndirection{0x100, 8};
constexpr CapField kLogMaxKlmListSize{0x11a, 6};
constexpr CapField kUmrModifyAtomicDisabled{0x208, 1};
constexpr CapField kUmrIndirectMkeyDisabled{0x209, 1};

std::uint32_t cap_get(const std::uint32_t *cap, CapField f)
{
	const std::uint32_t dw = be32toh(cap[f.bit / 32]);
	return dw >> (32 - f.width - f.bit % 32) & ((1u << f.width) - 1);
}

/* What one inline UMR holds on a QP created with kMaxInline (libmlx5's
 * mlx5_send_wr_set_mkey_layout: (max_inline_data + 4) / 16). */
constexpr std::uint32_t kMaxInline = 828;
constexpr std::uint32_t kSqWrs = 64;
constexpr std::uint8_t kPort = 1;

struct CtxDeleter {
	void operator()(ibv_context *c) const noexcept { ibv_close_device(c); }
};
struct PdDeleter {
	void operator()(ibv_pd *p) const noexcept { ibv_dealloc_pd(p); }
};
struct CqDeleter {
	void operator()(ibv_cq *c) const noexcept { ibv_destroy_cq(c); }
};
struct QpDeleter {
	void operator()(ibv_qp *q) const noexcept { ibv_destroy_qp(q); }
};
struct MrDeleter {
	void operator()(ibv_mr *m) const noexcept { ibv_dereg_mr(m); }
};
struct MkeyDeleter {
	void operator()(mlx5dv_mkey *m) const noexcept { mlx5dv_destroy_mkey(m); }
};

class HwDevice final : public Device {
public:
	std::string_view name() const noexcept override { return name_; }
	Result<DeviceCaps> query_caps() override { return caps_; }
	Result<MrHandle> reg_mr(std::uint64_t va, std::uint64_t len, std::uint32_t access) override;
	Status dereg_mr(std::uint32_t key) override;
	Result<std::uint32_t> create_mkey(std::uint16_t max_entries) override;
	Status destroy_mkey(std::uint32_t key) override;
	Status post_wqe(std::span<const std::byte> wqe, std::uint64_t wr_id) override;
	std::size_t poll(std::span<Cqe> out) override;
	Status reset_qp() override;
	void abandon() noexcept override;
	/* VFIO mode: ENOTSUP on rdma-core 44 (vfio_mode.cpp says why). This
	 * device is a kernel mlx5_core function; an MTT mkey over our own IOVAs
	 * needs the function on vfio-pci, under the VFIO provider. */
	Result<std::uint32_t> create_mtt_mkey(std::uint64_t, std::uint64_t, std::uint64_t,
					      std::uint32_t) override
	{
		return make_error(ENOTSUP, kVfioModeUnavailable);
	}
	~HwDevice() override;

	Status open(const mrsync_mlx5_params *params);

private:
	Status probe_caps();
	bool probe_update_tag();
	Status create_qp();
	Status connect_self();

	std::string name_;
	std::unique_ptr<ibv_context, CtxDeleter> own_ctx_;
	std::unique_ptr<ibv_pd, PdDeleter> own_pd_;
	ibv_context *ctx_ = nullptr;
	ibv_pd *pd_ = nullptr;
	std::unique_ptr<ibv_cq, CqDeleter> cq_;
	std::unique_ptr<ibv_qp, QpDeleter> qp_;
	ibv_qp_ex *qpx_ = nullptr;
	mlx5dv_qp_ex *mqpx_ = nullptr;
	DeviceCaps caps_;
	std::mutex mu_;
	std::unordered_map<std::uint32_t, std::unique_ptr<ibv_mr, MrDeleter>> mrs_;
	/** By index (key >> 8): a UMR may change a key's tag. */
	std::unordered_map<std::uint32_t, std::unique_ptr<mlx5dv_mkey, MkeyDeleter>> mkeys_;
};

Status HwDevice::open(const mrsync_mlx5_params *params)
{
	if (params && params->context) {
		if (!params->pd)
			return make_error(EINVAL, "mlx5: params->context without params->pd");
		ctx_ = params->context;
		pd_ = params->pd;
		name_ = ibv_get_device_name(ctx_->device);
	} else {
		int n = 0;
		ibv_device **list = ibv_get_device_list(&n);
		if (!list)
			return make_error(ENODEV, fmt("mlx5: ibv_get_device_list: %s",
						      errno_text(errno).c_str()));
		const char *want = params && params->device ? params->device
							    : std::getenv("MRSYNC_MLX5_DEVICE");
		ibv_device *dev = nullptr;
		for (int i = 0; i < n && !dev; ++i)
			if (mlx5dv_is_supported(list[i]) &&
			    (!want || !std::strcmp(ibv_get_device_name(list[i]), want)))
				dev = list[i];
		if (dev) {
			mlx5dv_context_attr attr{};
			attr.flags = MLX5DV_CONTEXT_FLAGS_DEVX;
			own_ctx_.reset(mlx5dv_open_device(dev, &attr));
			name_ = ibv_get_device_name(dev);
		}
		ibv_free_device_list(list);
		if (!dev)
			return make_error(ENODEV, want ? fmt("mlx5: no mlx5 device named %s", want)
						       : std::string("mlx5: no mlx5 device"));
		if (!own_ctx_)
			return make_error(EOPNOTSUPP, fmt("mlx5: mlx5dv_open_device(%s, DEVX): %s",
							  name_.c_str(), errno_text(errno).c_str()));
		own_pd_.reset(ibv_alloc_pd(own_ctx_.get()));
		if (!own_pd_)
			return make_error(errno, fmt("mlx5: ibv_alloc_pd: %s", errno_text(errno).c_str()));
		ctx_ = own_ctx_.get();
		pd_ = own_pd_.get();
	}
	if (auto st = probe_caps(); !st)
		return st;
	caps_.update_tag = probe_update_tag();
	if (auto st = create_qp(); !st)
		return st;
	return connect_self();
}

Status HwDevice::probe_caps()
{
	std::uint32_t in[4] = {htobe32(std::uint32_t(kQueryHcaCap) << 16), htobe32(kCapGeneralCur),
			       0, 0};
	std::vector<std::uint32_t> out(kCapOutBytes / 4);
	if (int rc = mlx5dv_devx_general_cmd(ctx_, in, sizeof in, out.data(), kCapOutBytes); rc)
		return make_error(EOPNOTSUPP, fmt("mlx5 %s: QUERY_HCA_CAP through DEVX: %s (the "
						  "context needs MLX5DV_CONTEXT_FLAGS_DEVX)",
						  name_.c_str(), errno_text(rc < 0 ? -rc : rc).c_str()));
	const std::uint32_t *cap = out.data() + 4;
	caps_.log_max_klm_list_size = cap_get(cap, kLogMaxKlmListSize);
	caps_.max_indirection = cap_get(cap, kMaxIndirection);
	caps_.umr_indirect_mkey_disabled = cap_get(cap, kUmrIndirectMkeyDisabled);
	caps_.umr_modify_atomic_disabled = cap_get(cap, kUmrModifyAtomicDisabled);
	caps_.umr_max_klms = std::min<std::uint32_t>((kMaxInline + 4) / 16, kUmrKlms);
	MRSYNC_LOG(info, "mlx5", "%s: log_max_klm_list_size %u, max_indirection %u, "
		   "umr_indirect_mkey_disabled %d, log_max_mkey %u", name_.c_str(),
		   caps_.log_max_klm_list_size, caps_.max_indirection,
		   int(caps_.umr_indirect_mkey_disabled), cap_get(cap, kLogMaxMkey));
	return {};
}

Status HwDevice::create_qp()
{
	cq_.reset(ibv_create_cq(ctx_, 2 * kSqWrs, nullptr, nullptr, 0));
	if (!cq_)
		return make_error(errno, fmt("mlx5: ibv_create_cq: %s", errno_text(errno).c_str()));
	ibv_qp_init_attr_ex attr{};
	attr.qp_type = IBV_QPT_RC;
	attr.send_cq = cq_.get();
	attr.recv_cq = cq_.get();
	attr.cap.max_send_wr = kSqWrs;
	attr.cap.max_recv_wr = 1;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	attr.cap.max_inline_data = kMaxInline;
	attr.pd = pd_;
	attr.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
	attr.send_ops_flags = IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_LOCAL_INV;
	mlx5dv_qp_init_attr dv{};
	dv.comp_mask = MLX5DV_QP_INIT_ATTR_MASK_SEND_OPS_FLAGS;
	/* MR_LIST beside MKEY_CONFIGURE: rdma-core before v47 sizes the SQ too
	 * small for MKEY_CONFIGURE alone (24850871b). */
	dv.send_ops_flags = MLX5DV_QP_EX_WITH_MKEY_CONFIGURE | MLX5DV_QP_EX_WITH_MR_LIST |
			    MLX5DV_QP_EX_WITH_RAW_WQE;
	qp_.reset(mlx5dv_create_qp(ctx_, &attr, &dv));
	if (!qp_)
		return make_error(errno, fmt("mlx5: creating the UMR QP (RC, RAW_WQE, %u B inline): %s",
					     kMaxInline, errno_text(errno).c_str()));
	qpx_ = ibv_qp_to_qp_ex(qp_.get());
	mqpx_ = mlx5dv_qp_ex_from_ibv_qp_ex(qpx_);
	caps_.umr_qpn = qp_->qp_num;
	caps_.sq_wqebbs = kSqWrs * 16;
	return {};
}

/* RESET -> INIT -> RTR -> RTS with itself as the destination (as UCX's
 * uct_ib_mlx5_devx_umr_modify_qp): a UMR QP never sends on the wire. */
Status HwDevice::connect_self()
{
	ibv_port_attr port{};
	if (int rc = ibv_query_port(ctx_, kPort, &port); rc)
		return make_error(rc, fmt("mlx5: ibv_query_port: %s", errno_text(rc).c_str()));
	ibv_qp_attr a{};
	a.qp_state = IBV_QPS_RESET;
	if (int rc = ibv_modify_qp(qp_.get(), &a, IBV_QP_STATE); rc)
		return make_error(rc, fmt("mlx5: UMR QP to RESET: %s", errno_text(rc).c_str()));
	a = {};
	a.qp_state = IBV_QPS_INIT;
	a.port_num = kPort;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
	if (int rc = ibv_modify_qp(qp_.get(), &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
							      IBV_QP_ACCESS_FLAGS);
	    rc)
		return make_error(rc, fmt("mlx5: UMR QP to INIT: %s", errno_text(rc).c_str()));
	a = {};
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = qp_->qp_num;
	a.ah_attr.port_num = kPort;
	a.ah_attr.dlid = port.lid;
	if (port.link_layer == IBV_LINK_LAYER_ETHERNET) {
		a.ah_attr.is_global = 1;
		a.ah_attr.grh.hop_limit = 1;
		a.ah_attr.grh.sgid_index = 0;
		(void)ibv_query_gid(ctx_, kPort, 0, &a.ah_attr.grh.dgid);
	}
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	if (int rc = ibv_modify_qp(qp_.get(), &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
							      IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
							      IBV_QP_MAX_DEST_RD_ATOMIC |
							      IBV_QP_MIN_RNR_TIMER);
	    rc)
		return make_error(rc, fmt("mlx5: UMR QP to RTR: %s", errno_text(rc).c_str()));
	a = {};
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	if (int rc = ibv_modify_qp(qp_.get(), &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
							      IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
							      IBV_QP_MAX_QP_RD_ATOMIC);
	    rc)
		return make_error(rc, fmt("mlx5: UMR QP to RTS: %s", errno_text(rc).c_str()));
	return {};
}

Result<MrHandle> HwDevice::reg_mr(std::uint64_t va, std::uint64_t len, std::uint32_t access)
{
	/* No RELAXED_ORDERING: a leaf of an indirect key with it fails "check
	 * indirect mkey, not atomic support" (UCX PR #8218). */
	std::unique_ptr<ibv_mr, MrDeleter> mr(
		ibv_reg_mr(pd_, reinterpret_cast<void *>(va), len, int(access)));
	if (!mr)
		return make_error(errno == ENOMEM ? ENOMEM : EFAULT,
				  fmt("mlx5 reg_mr [%#llx, +%#llx): %s", (unsigned long long)va,
				      (unsigned long long)len, errno_text(errno).c_str()));
	const MrHandle h{mr->lkey, va, len};
	std::lock_guard lock(mu_);
	mrs_.emplace(h.key, std::move(mr));
	return h;
}

Status HwDevice::dereg_mr(std::uint32_t key)
{
	std::lock_guard lock(mu_);
	if (!mrs_.erase(key))
		return make_error(EINVAL, fmt("mlx5 dereg_mr: unknown lkey %#x", key));
	return {};
}

Result<std::uint32_t> HwDevice::create_mkey(std::uint16_t max_entries)
{
	mlx5dv_mkey_init_attr attr{};
	attr.pd = pd_;
	attr.create_flags = MLX5DV_MKEY_INIT_ATTR_FLAGS_INDIRECT |
			    (caps_.update_tag ? MLX5DV_MKEY_INIT_ATTR_FLAGS_UPDATE_TAG : 0);
	attr.max_entries = max_entries;
	std::unique_ptr<mlx5dv_mkey, MkeyDeleter> mkey(mlx5dv_create_mkey(&attr));
	if (!mkey)
		return make_error(errno, fmt("mlx5dv_create_mkey(%u entries): %s", max_entries,
					     errno_text(errno).c_str()));
	const std::uint32_t key = mkey->lkey;
	std::lock_guard lock(mu_);
	/* By index: a UMR may give the key another tag (DeviceCaps::update_tag). */
	mkeys_.emplace(key >> 8, std::move(mkey));
	return key;
}

/* Whether libmlx5 and the firmware take UPDATE_TAG: the driver rotates the
 * tags of the keys it reuses only then. */
bool HwDevice::probe_update_tag()
{
	mlx5dv_mkey_init_attr attr{};
	attr.pd = pd_;
	attr.create_flags = MLX5DV_MKEY_INIT_ATTR_FLAGS_INDIRECT | MLX5DV_MKEY_INIT_ATTR_FLAGS_UPDATE_TAG;
	attr.max_entries = 4;
	std::unique_ptr<mlx5dv_mkey, MkeyDeleter> mkey(mlx5dv_create_mkey(&attr));
	if (!mkey)
		MRSYNC_LOG(info, "mlx5", "%s: indirect mkeys without UPDATE_TAG (%s): a destroyed "
			   "key is reused under the same number after the quarantine",
			   name_.c_str(), errno_text(errno).c_str());
	return bool(mkey);
}

Status HwDevice::destroy_mkey(std::uint32_t key)
{
	std::lock_guard lock(mu_);
	if (!mkeys_.erase(key >> 8))
		return make_error(EINVAL, fmt("mlx5 destroy_mkey: unknown key %#x", key));
	return {};
}

Status HwDevice::post_wqe(std::span<const std::byte> wqe, std::uint64_t wr_id)
{
	std::lock_guard lock(mu_);
	ibv_wr_start(qpx_);
	qpx_->wr_id = wr_id;
	/* INLINE is mandatory for UMR; every UMR is signalled: its CQE is the fence. */
	qpx_->wr_flags = IBV_SEND_INLINE | IBV_SEND_SIGNALED;
	mlx5dv_wr_raw_wqe(mqpx_, wqe.data());
	if (int rc = ibv_wr_complete(qpx_); rc)
		return make_error(rc, fmt("mlx5: posting a %zu-byte UMR: %s", wqe.size(),
					  errno_text(rc).c_str()));
	return {};
}

std::size_t HwDevice::poll(std::span<Cqe> out)
{
	ibv_wc wc[16];
	std::lock_guard lock(mu_);
	const int n = ibv_poll_cq(cq_.get(), int(std::min<std::size_t>(out.size(), 16)), wc);
	for (int i = 0; i < n; ++i)
		out[i] = {wc[i].wr_id, int(wc[i].status), wc[i].vendor_err};
	return n > 0 ? std::size_t(n) : 0;
}

Status HwDevice::reset_qp()
{
	std::lock_guard lock(mu_);
	return connect_self();
}

void HwDevice::abandon() noexcept
{
	/* The parent's objects: forget them without destroying any. */
	std::lock_guard lock(mu_);
	for (auto &[key, mr] : mrs_)
		(void)mr.release();
	for (auto &[key, mkey] : mkeys_)
		(void)mkey.release();
	(void)qp_.release();
	(void)cq_.release();
	(void)own_pd_.release();
	(void)own_ctx_.release();
}

HwDevice::~HwDevice() = default;

} // namespace

Result<std::unique_ptr<Device>> open_hw_device(const mrsync_mlx5_params *params)
{
	auto dev = std::make_unique<HwDevice>();
	if (auto st = dev->open(params); !st)
		return std::move(st).error();
	return std::unique_ptr<Device>(std::move(dev));
}

bool hw_available(std::string &why)
{
	auto dev = open_hw_device(nullptr);
	if (!dev) {
		why = dev.error().message;
		return false;
	}
	auto driver = Mlx5Driver::create(std::move(dev).value());
	if (!driver) {
		why = driver.error().message;
		return false;
	}
	return true;
}

Result<FactoryOptions> driver_options(const mrsync_mlx5_params *params)
{
	FactoryOptions options;
	if (!params)
		return options;
	if (params->struct_size < MRSYNC_MLX5_PARAMS_SIZE_V1)
		return make_error(EINVAL, fmt("mlx5: params->struct_size %u is smaller than any "
					      "struct mrsync_mlx5_params (%zu)",
					      params->struct_size, MRSYNC_MLX5_PARAMS_SIZE_V1));
	/* A caller built before `flags` existed passes the older size. */
	const bool has_flags =
		params->struct_size >= offsetof(mrsync_mlx5_params, flags) + sizeof(params->flags);
	const std::uint32_t flags = has_flags ? params->flags : 0;
	constexpr std::uint32_t kKnown = MRSYNC_MLX5_F_HOLES_FREE_KEY | MRSYNC_MLX5_F_FALLBACK_VERBS;
	if (const std::uint32_t unknown = flags & ~kKnown)
		return make_error(EINVAL, fmt("mlx5: params->flags has unknown bits 0x%x", unknown));
	if (params->fence_timeout_ms)
		options.driver.fence_timeout = std::chrono::milliseconds(params->fence_timeout_ms);
	options.driver.poison_refused = !(flags & MRSYNC_MLX5_F_HOLES_FREE_KEY);
	options.fallback_verbs = flags & MRSYNC_MLX5_F_FALLBACK_VERBS;
	return options;
}

bool falls_back_to_verbs(const FactoryOptions &options, const Error &why) noexcept
{
	return options.fallback_verbs && why.code == EOPNOTSUPP;
}

namespace {

/* The application asked for it (MRSYNC_MLX5_F_FALLBACK_VERBS): the verbs
 * driver in the same PD, or on the same device. */
Result<std::unique_ptr<Driver>> verbs_instead(const mrsync_mlx5_params &params, const DriverConfig &config,
					      Error why)
{
	const DriverFactory *verbs = find_driver("verbs");
	if (!verbs)
		return make_error(why.code, why.message + "; the verbs driver to fall back to is not built");
	MRSYNC_LOG(warning, "mlx5", "%s; falling back to the verbs driver (keys change on a resync)",
		   why.message.c_str());
	mrsync_verbs_params vp = MRSYNC_VERBS_PARAMS_INIT;
	vp.pd = params.pd;
	vp.device = params.pd ? nullptr : params.device;
	DriverConfig verbs_config = config;
	verbs_config.arg = &vp;
	return verbs->create(verbs_config);
}

Result<std::unique_ptr<Driver>> create_driver(const DriverConfig &config)
{
	const auto *params = static_cast<const mrsync_mlx5_params *>(config.arg);
	/* The arguments first: a bad one is reported before a device is opened. */
	auto options = driver_options(params);
	if (!options)
		return std::move(options).error();
	auto dev = open_hw_device(params);
	Result<std::unique_ptr<Mlx5Driver>> driver =
		dev ? Mlx5Driver::create(std::move(dev).value(), options->driver)
		    : Result<std::unique_ptr<Mlx5Driver>>(std::move(dev).error());
	if (!driver) {
		if (falls_back_to_verbs(*options, driver.error()))
			return verbs_instead(*params, config, std::move(driver).error());
		return std::move(driver).error();
	}
	return std::unique_ptr<Driver>(std::move(driver).value());
}

const DriverFactory kFactory{
	.name = "mlx5",
	.available = &hw_available,
	.create = &create_driver,
};

} // namespace

} // namespace mrsync::mlx5

MRSYNC_REGISTER_DRIVER(mrsync::mlx5::kFactory)
