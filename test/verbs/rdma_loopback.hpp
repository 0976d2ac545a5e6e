// Real RDMA for the guest tests: one device (Soft-RoCE rxe0), two RC queue
// pairs connected to each other over RoCE v2, RDMA WRITE and READ from QP a
// into memory registered in the same PD, completions polled here. The
// application side of the verbs driver's fence contract is `drain()`.
#ifndef MRSYNC_TEST_RDMA_LOOPBACK_HPP
#define MRSYNC_TEST_RDMA_LOOPBACK_HPP

#include <infiniband/verbs.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace mrsync::test {

/** The RoCE v2 IPv4 GID index of port 1, from sysfs; -1 if none. */
inline int roce_v2_ipv4_gid(const std::string &dev)
{
	for (int i = 0; i < 16; ++i) {
		const std::string base = "/sys/class/infiniband/" + dev + "/ports/1/";
		std::ifstream type(base + "gid_attrs/types/" + std::to_string(i));
		std::ifstream gid(base + "gids/" + std::to_string(i));
		std::string t, g;
		std::getline(type, t);
		std::getline(gid, g);
		if (t == "RoCE v2" && g.rfind("0000:0000:0000:0000:0000:ffff:", 0) == 0)
			return i;
	}
	return -1;
}

class Loopback {
public:
	/** Opens `dev` and connects the two QPs; ok() says whether it worked
	 *  and error() why. */
	explicit Loopback(const char *dev = "rxe0")
	{
		int n = 0;
		ibv_device **list = ibv_get_device_list(&n);
		for (int i = 0; list && i < n; ++i)
			if (std::strcmp(ibv_get_device_name(list[i]), dev) == 0)
				ctx_ = ibv_open_device(list[i]);
		if (list)
			ibv_free_device_list(list);
		if (!ctx_)
			{ fail(std::string("no device ") + dev); return; }
		gid_index_ = roce_v2_ipv4_gid(dev);
		if (gid_index_ < 0)
			{ fail("no RoCE v2 IPv4 GID (is the netdev up with an address?)"); return; }
		pd_ = ibv_alloc_pd(ctx_);
		setup();
	}
	/** Adopts an open context and PD, which stay the caller's (test/hw/mlx5:
	 *  the DEVX context whose keys live in that PD). Without a RoCE v2 GID
	 *  (InfiniBand) it uses GID 0. */
	Loopback(ibv_context *ctx, ibv_pd *pd) : ctx_(ctx), pd_(pd), owns_(false)
	{
		gid_index_ = std::max(0, roce_v2_ipv4_gid(ibv_get_device_name(ctx->device)));
		setup();
	}
	void setup()
	{
		cq_ = pd_ ? ibv_create_cq(ctx_, 1024, nullptr, nullptr, 0) : nullptr;
		if (!cq_)
			{ fail("pd/cq"); return; }
		a_ = make_qp();
		b_ = make_qp();
		if (!a_ || !b_ || !connect(a_, b_) || !connect(b_, a_))
			{ fail("qp setup: " + std::string(std::strerror(errno))); return; }
		scratch_ = static_cast<char *>(mmap(nullptr, kScratch, PROT_READ | PROT_WRITE,
						    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		scratch_mr_ = ibv_reg_mr(pd_, scratch_, kScratch, IBV_ACCESS_LOCAL_WRITE);
		if (!scratch_mr_)
			{ fail("scratch mr"); return; }
		ok_ = true;
	}
	~Loopback()
	{
		drain();
		if (scratch_mr_)
			ibv_dereg_mr(scratch_mr_);
		if (scratch_)
			munmap(scratch_, kScratch);
		for (ibv_qp *qp : {a_, b_})
			if (qp)
				ibv_destroy_qp(qp);
		if (cq_)
			ibv_destroy_cq(cq_);
		if (pd_ && owns_)
			ibv_dealloc_pd(pd_);
		if (ctx_ && owns_)
			ibv_close_device(ctx_);
	}
	Loopback(const Loopback &) = delete;
	Loopback &operator=(const Loopback &) = delete;

	bool ok() const { return ok_; }
	const std::string &error() const { return error_; }
	ibv_pd *pd() const { return pd_; }

	/** Posts an RDMA WRITE of `data` to (rkey, va); does not wait. */
	bool post_write(std::uint32_t rkey, const void *va, const std::vector<char> &data)
	{
		const std::size_t at = next_scratch(data.size());
		std::memcpy(scratch_ + at, data.data(), data.size());
		return post(IBV_WR_RDMA_WRITE, rkey, va, at, data.size());
	}
	/** Posts an RDMA READ of `len` bytes at (rkey, va) into the scratch area. */
	bool post_read(std::uint32_t rkey, const void *va, std::size_t len, std::size_t &at)
	{
		at = next_scratch(len);
		return post(IBV_WR_RDMA_READ, rkey, va, at, len);
	}
	const char *scratch(std::size_t at) const { return scratch_ + at; }

	/** Waits for every posted request; returns how many failed. */
	int drain()
	{
		int failed = 0;
		while (outstanding_ > 0) {
			ibv_wc wc[16];
			const int n = ibv_poll_cq(cq_, 16, wc);
			if (n < 0)
				return failed + outstanding_;
			for (int i = 0; i < n; ++i) {
				--outstanding_;
				if (wc[i].status != IBV_WC_SUCCESS) {
					++failed;
					last_status_ = wc[i].status;
				}
			}
		}
		failed_total_ += failed;
		if (failed)
			reconnect();
		return failed;
	}
	/** Posts one WRITE and waits: true if it completed successfully. */
	bool write(std::uint32_t rkey, const void *va, const std::vector<char> &data)
	{
		return post_write(rkey, va, data) && drain() == 0;
	}
	ibv_wc_status last_status() const { return last_status_; }
	int outstanding() const { return outstanding_; }

	/** For mrsync_verbs_params.quiesce. */
	static int quiesce(void *self)
	{
		static_cast<Loopback *>(self)->drain();
		return 0;
	}

private:
	static constexpr std::size_t kScratch = 8u << 20;

	void fail(std::string why) { error_ = std::move(why); }

	std::size_t next_scratch(std::size_t len)
	{
		if (cursor_ + len > kScratch)
			cursor_ = 0;
		const std::size_t at = cursor_;
		cursor_ += (len + 63) & ~std::size_t(63);
		return at;
	}

	bool post(ibv_wr_opcode op, std::uint32_t rkey, const void *va, std::size_t at,
		  std::size_t len)
	{
		ibv_sge sge{reinterpret_cast<std::uint64_t>(scratch_ + at), std::uint32_t(len),
			    scratch_mr_->lkey};
		ibv_send_wr wr{};
		wr.wr_id = ++wr_id_;
		wr.sg_list = &sge;
		wr.num_sge = 1;
		wr.opcode = op;
		wr.send_flags = IBV_SEND_SIGNALED;
		wr.wr.rdma.remote_addr = reinterpret_cast<std::uint64_t>(va);
		wr.wr.rdma.rkey = rkey;
		ibv_send_wr *bad = nullptr;
		if (outstanding_ >= 200)
			drain();
		if (ibv_post_send(a_, &wr, &bad) != 0)
			return false;
		++outstanding_;
		return true;
	}

	ibv_qp *make_qp()
	{
		ibv_qp_init_attr attr{};
		attr.send_cq = attr.recv_cq = cq_;
		attr.qp_type = IBV_QPT_RC;
		attr.cap.max_send_wr = 256;
		attr.cap.max_recv_wr = 16;
		attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
		return ibv_create_qp(pd_, &attr);
	}

	/* An RC error (a refused key) leaves both QPs in the error state, which
	 * flushes every later request: reset and connect them again. */
	void reconnect()
	{
		for (ibv_qp *qp : {a_, b_}) {
			ibv_qp_attr reset{};
			reset.qp_state = IBV_QPS_RESET;
			ibv_modify_qp(qp, &reset, IBV_QP_STATE);
		}
		ibv_wc wc[16];
		while (ibv_poll_cq(cq_, 16, wc) > 0) {
		}
		if (!connect(a_, b_) || !connect(b_, a_))
			error_ = "reconnect failed";
	}

	bool connect(ibv_qp *qp, ibv_qp *peer)
	{
		ibv_port_attr port{};
		ibv_gid gid{};
		if (ibv_query_port(ctx_, 1, &port) || ibv_query_gid(ctx_, 1, gid_index_, &gid))
			return false;
		ibv_qp_attr a{};
		a.qp_state = IBV_QPS_INIT;
		a.port_num = 1;
		a.qp_access_flags =
			IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
		if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
						  IBV_QP_ACCESS_FLAGS))
			return false;
		a = {};
		a.qp_state = IBV_QPS_RTR;
		a.path_mtu = port.active_mtu;
		a.dest_qp_num = peer->qp_num;
		a.rq_psn = 0;
		a.max_dest_rd_atomic = 4;
		a.min_rnr_timer = 12;
		a.ah_attr.is_global = 1;
		a.ah_attr.grh.dgid = gid;
		a.ah_attr.grh.sgid_index = std::uint8_t(gid_index_);
		a.ah_attr.grh.hop_limit = 1;
		a.ah_attr.port_num = 1;
		if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
						  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
						  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
			return false;
		a = {};
		a.qp_state = IBV_QPS_RTS;
		a.timeout = 14;
		a.retry_cnt = 7;
		a.rnr_retry = 7;
		a.sq_psn = 0;
		a.max_rd_atomic = 4;
		return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
						     IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
						     IBV_QP_MAX_QP_RD_ATOMIC) == 0;
	}

	ibv_context *ctx_ = nullptr;
	ibv_pd *pd_ = nullptr;
	ibv_cq *cq_ = nullptr;
	ibv_qp *a_ = nullptr, *b_ = nullptr;
	char *scratch_ = nullptr;
	ibv_mr *scratch_mr_ = nullptr;
	std::size_t cursor_ = 0;
	int gid_index_ = -1;
	int outstanding_ = 0;
	int failed_total_ = 0;
	std::uint64_t wr_id_ = 0;
	ibv_wc_status last_status_ = IBV_WC_SUCCESS;
	bool ok_ = false;
	bool owns_ = true;
	std::string error_;
};

} // namespace mrsync::test

#endif
