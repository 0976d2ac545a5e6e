/* SPDX-License-Identifier: MIT */
/* The mlx5 hardware test (docs/mlx5.md). Where ibv_devices lists an mlx5
 * device it runs the driver's scenarios on it and settles the open questions
 * of shared/MLX5.md §7.5, one "finding:" line each; elsewhere it prints
 * "skipped: no mlx5 device" and exits 0 (77 with --meson, meson's "skipped").
 *   mlx5-hw-test [--meson] [--device NAME]
 * Exit 1 when a scenario fails (a lost write, a key change, a failed write
 * to an untouched page); findings never fail the run, they are the answers. */
#include <infiniband/mlx5dv.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <mrsync/mlx5.h>
#include <mrsync/mrsync.hpp>

#include "hw_device.hpp"
#include "rdma_loopback.hpp"
#include "umr_wqe.hpp"
#include "vfio_finding.hpp"

namespace {

using namespace mrsync;
using namespace mrsync::mlx5;
constexpr std::size_t kPage = 4096;

int failures = 0;

void finding(const char *question, const std::string &answer)
{
	std::printf("finding: %s: %s\n", question, answer.c_str());
}
void scenario(const char *name, bool ok, const std::string &detail)
{
	std::printf("scenario: %s: %s%s%s\n", name, ok ? "pass" : "FAIL", detail.empty() ? "" : ": ",
		    detail.c_str());
	failures += !ok;
}

std::vector<char> bytes(std::size_t n, int seed)
{
	std::vector<char> v(n);
	for (std::size_t i = 0; i < n; ++i)
		v[i] = char(i * 31 + seed);
	return v;
}

/** The hardware side of the questions: a DEVX context, its PD, our device
 *  (UMR QP) and a loopback RC pair in the same PD for RDMA WRITEs. */
struct Rig {
	ibv_context *ctx = nullptr;
	ibv_pd *pd = nullptr;
	std::unique_ptr<Device> dev;
	std::unique_ptr<test::Loopback> rdma;
	DeviceCaps caps;
	/** The "poison refusal" finding: the scenarios run the driver with
	 *  MRSYNC_MLX5_F_HOLES_FREE_KEY when the device does not refuse. */
	bool poison_refused = true;
	std::uint64_t wr = 0;
	std::uint16_t pi = 0;

	/** Posts a UMR and waits for its completion: the ibv_wc_status, or -errno at post. */
	int umr(UmrSpec spec, const std::vector<Klm> &klms)
	{
		spec.qpn = caps.umr_qpn;
		spec.wqe_index = pi;
		const auto wqe = build_umr(spec, klms);
		if (auto st = dev->post_wqe(wqe, ++wr); !st)
			return -st.error().code;
		pi = std::uint16_t(pi + wqe.size() / 64);
		for (int spin = 0; spin < 10'000'000; ++spin) {
			Cqe c;
			if (dev->poll({&c, 1}))
				return c.status;
		}
		return -ETIMEDOUT;
	}
	int configure(std::uint32_t key, std::uint64_t start, const std::vector<Klm> &klms,
		      std::uint32_t access = MRSYNC_ACCESS_ALL)
	{
		std::uint64_t len = 0;
		for (const Klm &k : klms)
			len += k.len;
		return umr({.mkey = key, .access = access, .start_addr = start, .len = len}, klms);
	}
	void recover()
	{
		(void)dev->reset_qp();
		pi = 0;
	}
};

struct Buffer {
	explicit Buffer(std::size_t pages) : len(pages * kPage)
	{
		void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		base = p == MAP_FAILED ? nullptr : static_cast<char *>(p);
	}
	~Buffer() { if (base) munmap(base, len); }
	std::uint64_t va(std::size_t page = 0) const { return std::uint64_t(base + page * kPage); }
	char *base;
	std::size_t len;
};

bool landed(const char *at, const std::vector<char> &data)
{
	return std::memcmp(at, data.data(), data.size()) == 0;
}

void findings(Rig &r)
{
	Buffer buf(64);
	auto leaf = r.dev->reg_mr(buf.va(), buf.len, MRSYNC_ACCESS_ALL);
	auto key = r.dev->create_mkey(kUmrKlms);
	if (!leaf || !key) {
		scenario("setup", false, "reg_mr/create_mkey failed");
		return;
	}
	const Klm whole{leaf->key, buf.va(), std::uint32_t(buf.len)};
	/* START_ADDR: a VA-based key by raw UMR. */
	int st = r.configure(*key, buf.va(), {whole});
	auto data = bytes(256, 1);
	const bool va_ok = st == 0 && r.rdma->write(*key, buf.base + 100, data) &&
			   landed(buf.base + 100, data);
	finding("the START_ADDR UMR", va_ok ? "works: a raw UMR makes a VA-based key"
					  : "FAILS (UMR status " + std::to_string(st) + ")");
	/* Inline capacity: 52 entries of 64 bytes each, then 53. */
	std::vector<Klm> many;
	for (std::uint32_t i = 0; i < kUmrKlms; ++i)
		many.push_back({leaf->key, buf.va() + 64 * i, 64});
	const int at52 = r.configure(*key, buf.va(), many);
	many.push_back({leaf->key, buf.va() + 64 * kUmrKlms, 64});
	const int at53 = r.configure(*key, buf.va(), many);
	if (at53 > 0)
		r.recover();
	finding("inline capacity", "52 KLMs: " + std::to_string(at52) + ", 53 KLMs: " +
					   std::to_string(at53) + " (0 = completed, <0 = -errno at post)");
	/* Nesting: chains of indirect keys over the leaf. */
	std::uint32_t inner = leaf->key, deepest = 0;
	for (std::uint32_t depth = 1; depth <= 4; ++depth) {
		auto k = r.dev->create_mkey(4);
		/* Every level VA-based, so each entry addresses the level below by VA. */
		if (!k || r.configure(*k, buf.va(), {{inner, buf.va(), std::uint32_t(buf.len)}}))
			break;
		inner = *k;
		if (r.rdma->write(*k, buf.base, data))
			deepest = depth;
	}
	finding("nesting depth", "writes work through " + std::to_string(deepest) +
					 " indirect levels; max_indirection reports " +
					 std::to_string(r.caps.max_indirection));
	/* Poison: an entry naming a never-configured indirect key. */
	auto poison = r.dev->create_mkey(4);
	auto holed = r.dev->create_mkey(4);
	std::memset(buf.base, 0, buf.len);
	if (poison && holed && r.configure(*holed, 0, {{*poison, 0, std::uint32_t(kPage)}}) == 0) {
		const bool accepted = r.rdma->write(*holed, nullptr, data);
		r.poison_refused = !accepted;
		finding("poison refusal", accepted ? "NOT refused: run the driver with "
						     "MRSYNC_MLX5_F_HOLES_FREE_KEY (the scenarios "
						     "below do; docs/mlx5.md)"
						   : "refused (" + std::to_string(r.rdma->last_status()) +
							     "): holes may point at a free key");
	}
	/* Tag rotation: the driver parks a destroyed key under its next tag in
	 * the invalidating UMR, so the old rkey must stop working. */
	if (!r.caps.update_tag) {
		finding("tag rotation", "mkeys cannot be created with UPDATE_TAG: destroyed keys are "
					"reused under the same number after the quarantine");
	} else if (auto tagged = r.dev->create_mkey(4); tagged) {
		const Klm one{leaf->key, buf.va(), std::uint32_t(kPage)};
		UmrSpec park{.mkey = *tagged, .invalidate = true};
		park.new_tag = std::uint16_t((*tagged + 1) & 0xff);
		const std::uint32_t renamed = (*tagged & ~0xffu) | park.new_tag;
		const int parked = r.configure(*tagged, buf.va(), {one}) == 0 ? r.umr(park, {}) : -1;
		const int again = parked == 0 ? r.configure(renamed, buf.va(), {one}) : -1;
		const bool old_works = again == 0 && r.rdma->write(*tagged, buf.base, data);
		const bool new_works = again == 0 && r.rdma->write(renamed, buf.base, data);
		finding("tag rotation",
			again != 0 ? "a UMR with a new tag FAILED (status " + std::to_string(parked) +
					     "/" + std::to_string(again) + ")"
			: !old_works && new_works
				? "works: after the parking UMR the old key is refused, the new one works"
				: std::string("old key ") + (old_works ? "still works" : "refused") +
					  ", new key " + (new_works ? "works" : "refused"));
		(void)r.dev->destroy_mkey(renamed);
	}
	/* Leaf remote rights: a LOCAL_WRITE-only leaf behind a REMOTE_WRITE key. */
	auto local_only = r.dev->reg_mr(buf.va(8), kPage, MRSYNC_ACCESS_LOCAL_WRITE);
	auto over = r.dev->create_mkey(4);
	if (local_only && over &&
	    r.configure(*over, buf.va(8), {{local_only->key, buf.va(8), std::uint32_t(kPage)}}) == 0)
		finding("leaf remote rights",
			r.rdma->write(*over, buf.base + 8 * kPage, data)
				? "not needed: the indirect key's rights suffice"
				: "needed: leaves must be registered with remote rights");
	/* Recovery: a UMR naming a deregistered MR, then reset and re-post. */
	auto doomed = r.dev->reg_mr(buf.va(16), kPage, MRSYNC_ACCESS_ALL);
	if (doomed) {
		const std::uint32_t gone = doomed->key;
		(void)r.dev->dereg_mr(gone);
		const int bad = r.configure(*key, buf.va(16), {{gone, buf.va(16), std::uint32_t(kPage)}});
		r.recover();
		const int again = r.configure(*key, buf.va(), {whole});
		finding("recovery", "UMR naming a dead MR: status " + std::to_string(bad) +
					    "; after reset to RTS the full list: status " +
					    std::to_string(again));
	}
	/* Live override under streaming DMA: writes to pages 0-7 while UMRs
	 * rewrite the entries of pages 8-15 a thousand times. */
	auto spare = r.dev->reg_mr(buf.va(32), 8 * kPage, MRSYNC_ACCESS_ALL);
	std::atomic<bool> stop{false};
	std::atomic<int> ok{0}, bad{0};
	std::thread peer([&] {
		for (int i = 0; !stop; ++i) {
			const auto d = bytes(kPage, i);
			(r.rdma->write(*key, buf.base + (i % 8) * kPage, d) &&
			 landed(buf.base + (i % 8) * kPage, d) ? ok : bad)++;
		}
	});
	int umr_errors = 0;
	for (int i = 0; i < 1000 && spare; ++i) {
		const std::uint64_t second = i % 2 ? buf.va(8) : buf.va(32);
		const std::uint32_t second_key = i % 2 ? leaf->key : spare->key;
		umr_errors += r.configure(*key, buf.va(), {{leaf->key, buf.va(), 8 * kPage},
							   {second_key, second, 8 * kPage},
							   {leaf->key, buf.va(16), 48 * kPage}}) != 0;
	}
	stop = true;
	peer.join();
	finding("live override under streaming DMA",
		std::to_string(ok) + " writes to untouched pages landed, " + std::to_string(bad) +
			" failed, during 1000 UMRs (" + std::to_string(umr_errors) + " failed)");
}

/* The driver's scenarios through mrsync: a one-page change keeps the key
 * and the write lands; writes to untouched pages during resyncs succeed. */
void scenarios(Rig &r)
{
	mrsync_mlx5_params mp = MRSYNC_MLX5_PARAMS_INIT;
	mp.context = r.ctx;
	mp.pd = r.pd;
	mp.flags = r.poison_refused ? 0 : MRSYNC_MLX5_F_HOLES_FREE_KEY;
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "mlx5";
	params.driver_arg = &mp;
	params.sources = MRSYNC_SOURCE_MANUAL;
	auto ctx = Context::create(params);
	if (!ctx) {
		scenario("mrsync context on mlx5", false, ctx.error().message);
		return;
	}
	Buffer buf(256);
	auto first = ctx->get(buf.base, buf.len);
	if (!first) {
		scenario("registration", false, first.error().message);
		return;
	}
	const std::uint32_t rkey = first->rkey();
	first->reset();
	std::atomic<bool> stop{false};
	std::atomic<int> ok{0}, bad{0};
	std::thread peer([&] {
		for (int i = 0; !stop; ++i) {
			const auto d = bytes(kPage, i);
			char *at = buf.base + (i % 64) * kPage;
			(r.rdma->write(rkey, at, d) && landed(at, d) ? ok : bad)++;
		}
	});
	bool kept = true, lands = true;
	for (int i = 0; i < 200; ++i) {
		char *page = buf.base + (100 + i % 100) * kPage;
		mmap(page, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		(void)ctx->notify_unmap(page, kPage);
		auto reg = ctx->get(page, kPage);
		kept &= reg && reg->rkey() == rkey;
		const auto d = bytes(kPage, 1000 + i);
		lands &= reg && r.rdma->write(rkey, page, d) && landed(page, d);
	}
	stop = true;
	peer.join();
	scenario("one-page resyncs keep the rkey", kept && ctx->stats().key_changes == 0, "");
	scenario("writes to the changed page land", lands, "");
	scenario("writes to untouched pages during resyncs", bad == 0,
		 std::to_string(ok) + " landed, " + std::to_string(bad) + " failed");
}

} // namespace

int main(int argc, char **argv)
{
	bool meson = false;
	const char *want = nullptr;
	for (int i = 1; i < argc; ++i) {
		if (!std::strcmp(argv[i], "--meson"))
			meson = true;
		else if (!std::strcmp(argv[i], "--device") && i + 1 < argc)
			want = argv[++i];
		else {
			std::fprintf(stderr, "usage: mlx5-hw-test [--meson] [--device NAME]\n");
			return 2;
		}
	}
	int n = 0;
	ibv_device **list = ibv_get_device_list(&n);
	ibv_device *dev = nullptr;
	for (int i = 0; list && i < n && !dev; ++i)
		if (mlx5dv_is_supported(list[i]) &&
		    (!want || !std::strcmp(ibv_get_device_name(list[i]), want)))
			dev = list[i];
	/* A function on vfio-pci has no mlx5_core, so ibv_devices does not
	 * list it: VFIO mode is answered before the skip. */
	finding("VFIO mode", hw::vfio_mode());
	if (!dev) {
		if (list)
			ibv_free_device_list(list);
		std::printf("skipped: no mlx5 device\n");
		return meson ? 77 : 0;
	}
	Rig r;
	mlx5dv_context_attr attr{};
	attr.flags = MLX5DV_CONTEXT_FLAGS_DEVX;
	r.ctx = mlx5dv_open_device(dev, &attr);
	ibv_free_device_list(list);
	r.pd = r.ctx ? ibv_alloc_pd(r.ctx) : nullptr;
	mrsync_mlx5_params mp = MRSYNC_MLX5_PARAMS_INIT;
	mp.context = r.ctx;
	mp.pd = r.pd;
	auto device = r.pd ? open_hw_device(&mp) : make_error(ENODEV, "mlx5dv_open_device(DEVX) failed");
	if (!device) {
		std::printf("fallback: %s\n", device.error().message.c_str());
		return 1;
	}
	r.dev = std::move(device).value();
	auto caps = r.dev->query_caps();
	if (caps)
		r.caps = *caps;
	r.rdma = std::make_unique<test::Loopback>(r.ctx, r.pd);
	if (!r.rdma->ok()) {
		std::printf("loopback QPs: %s\n", r.rdma->error().c_str());
		return 1;
	}
	std::printf("device %s: max_indirection %u, log_max_klm_list_size %u, "
		    "umr_indirect_mkey_disabled %d\n",
		    std::string(r.dev->name()).c_str(), r.caps.max_indirection,
		    r.caps.log_max_klm_list_size, int(r.caps.umr_indirect_mkey_disabled));
	findings(r);
	scenarios(r);
	r.rdma.reset();
	r.dev.reset();
	ibv_dealloc_pd(r.pd);
	ibv_close_device(r.ctx);
	std::printf("%d scenario(s) failed\n", failures);
	return failures ? 1 : 0;
}
