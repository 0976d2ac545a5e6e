/* SPDX-License-Identifier: MIT */
/* The mlx5 model (mlx5_model.hpp): the key table, the UMR QP and its
 * engine, and the per-packet data path: the model is the DMA engine's
 * translator (drivers/dma_engine), each packet one engine request whose
 * pieces are the leaf MRs' slots the KLM walk reaches. */
#include "mlx5_model.hpp"

#include <infiniband/mlx5dv.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <deque>
#include <mutex>
#include <random>

#include <mrsync/mrsync.h>
#include "dma_engine.hpp"
#include "format.hpp"

namespace mrsync::mlx5 {

using ::mrsync::detail::fmt;

namespace {

constexpr std::uint32_t kIndices = 1u << 16;
constexpr std::uint64_t kAllowedMask =
	MLX5_WQE_UMR_CTRL_MKEY_MASK_FREE | MLX5_WQE_UMR_CTRL_MKEY_MASK_MKEY |
	MLX5_WQE_UMR_CTRL_MKEY_MASK_LEN | MLX5_WQE_UMR_CTRL_MKEY_MASK_START_ADDR |
	MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_LOCAL_WRITE |
	MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_REMOTE_READ |
	MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_REMOTE_WRITE |
	MLX5_WQE_UMR_CTRL_MKEY_MASK_ACCESS_ATOMIC;

enum class Kind : std::uint8_t { None, Mr, NullMr, Mkey };

/** A KLM as the key holds it, with the incarnation of the object it named
 *  when the UMR took effect (the hardware keeps only the key number). */
struct HeldKlm {
	Klm klm;
	std::uint64_t incarnation = 0;
};

struct Object {
	Kind kind = Kind::None;
	std::uint32_t tag = 0;
	std::uint64_t incarnation = 0;
	std::uint32_t access = 0;
	/* Mr */
	std::uint64_t addr = 0, len = 0;
	BackingId backing = kNoBacking; /**< the leaf's engine slot */
	/* Mkey */
	std::uint32_t max_entries = 0;
	bool update_tag = false; /**< created with UPDATE_TAG */
	bool free = true;
	std::vector<HeldKlm> klms;
};

struct Pending {
	DecodedUmr umr;
	std::uint64_t wr_id = 0;
	std::uint32_t wqebbs = 0;
	bool applied = false;
};

/** A piece of a packet: a leaf and the bytes of it; leaf nullptr discards. */
struct Piece {
	const Object *leaf;
	std::uint64_t addr;
	std::uint64_t len;
};

std::uint32_t index_of(std::uint32_t key)
{
	return key >> 8;
}

} // namespace

/* Locks: the engine's submission lock, then mu (translate() is called under
 * the former and takes the latter); the engine is never called under mu. */
struct Mlx5Model::Impl final : dma::Translator {
	ModelOptions options;
	mutable std::mutex mu;
	std::mt19937_64 rng;
	std::vector<Object> objects{kIndices};
	std::vector<std::uint32_t> free_indices; /* LIFO */
	std::uint64_t next_incarnation = 1;
	bool qp_error = false;
	std::deque<Pending> sq;
	std::uint32_t sq_used = 0;
	bool last_posted_umr = false;
	std::deque<Cqe> cq;
	unsigned faults = 0;
	FaultMode fault_mode = FaultMode::KeepKey;
	std::vector<std::string> violations;
	ModelStats stats;
	std::atomic<std::uint64_t> next_ud{1};

	Object *find(std::uint32_t key)
	{
		const std::uint32_t i = index_of(key);
		if (i == 0 || i >= kIndices || objects[i].kind == Kind::None ||
		    objects[i].tag != (key & 0xff))
			return nullptr;
		return &objects[i];
	}
	Result<std::uint32_t> take_index(Kind kind)
	{
		if (free_indices.empty())
			return make_error(ENOMEM, "mlx5 model: out of mkey indices");
		const std::uint32_t i = free_indices.back();
		free_indices.pop_back();
		objects[i] = Object{};
		objects[i].kind = kind;
		objects[i].incarnation = next_incarnation++;
		return i << 8; /* tag 0, as mlx5dv_create_mkey and a fresh MR */
	}
	bool chance() { return rng() % 100 < options.apply_percent; }
	void violation(std::string what) { violations.push_back(std::move(what)); }

	void step();
	void execute_head();
	void apply(Pending &p);
	void fail_head(int status);
	int walk(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool write,
		 std::uint32_t depth, std::vector<Piece> &out);
	/** One packet: a UMR may take effect first, then the KLM walk; the
	 *  leaves it reaches become engine pieces (a null MR's: kDiscard).
	 *  Returns an ibv_wc_status. Takes mu. */
	int packet(std::uint32_t rkey, std::uint64_t va, std::uint64_t len, bool write,
		   std::vector<dma::Piece> &out);
	int translate(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool into_memory,
		      std::vector<dma::Piece> &out) override
	{
		return packet(key, va, len, into_memory, out) == kWcSuccess ? 0 : EACCES;
	}
	int transfer(PeerQp &qp, std::uint32_t rkey, std::uint64_t va, std::byte *buf,
		     std::uint64_t len, bool write);
	std::string referenced_by(std::uint32_t key) const;

	/* Declared last, destroyed first: it drains DMA while the model that
	 * translates for it is whole. */
	std::unique_ptr<dma::Engine> engine;
};

Mlx5Model::Mlx5Model(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Mlx5Model::~Mlx5Model() = default;

Result<std::unique_ptr<Mlx5Model>> Mlx5Model::create(const ModelOptions &options)
{
	if (options.mtu == 0 || options.mtu % 64 || options.umr_max_klms == 0 ||
	    options.sq_wqebbs == 0)
		return make_error(EINVAL, "mlx5 model: mtu (a multiple of 64), umr_max_klms and "
					  "sq_wqebbs must be non-zero");
	auto impl = std::make_unique<Impl>();
	impl->options = options;
	impl->rng.seed(options.seed);
	for (std::uint32_t i = kIndices; i-- > 1;)
		impl->free_indices.push_back(i);
	if (options.no_memory)
		return std::unique_ptr<Mlx5Model>(new Mlx5Model(std::move(impl)));
	auto engine = dma::Engine::create({.name = "mlx5 model"}, *impl);
	if (!engine)
		return std::move(engine).error();
	impl->engine = std::move(engine).value();
	return std::unique_ptr<Mlx5Model>(new Mlx5Model(std::move(impl)));
}

Result<DeviceCaps> Mlx5Model::query_caps()
{
	return DeviceCaps{.log_max_klm_list_size = 16,
			  .max_indirection = impl_->options.max_indirection,
			  .umr_indirect_mkey_disabled = false,
			  .umr_modify_atomic_disabled = false,
			  .umr_max_klms = impl_->options.umr_max_klms,
			  .sq_wqebbs = impl_->options.sq_wqebbs,
			  .umr_qpn = 0x1234,
			  .update_tag = impl_->options.update_tag};
}

Result<MrHandle> Mlx5Model::reg_mr(std::uint64_t va, std::uint64_t len, std::uint32_t access)
{
	if (impl_->options.no_memory) {
		std::lock_guard lock(impl_->mu);
		auto key = impl_->take_index(Kind::Mr);
		if (!key)
			return std::move(key).error();
		Object &o = impl_->objects[index_of(*key)];
		o.addr = va;
		o.len = len;
		o.access = access;
		return MrHandle{*key, va, len};
	}
	/* Pin outside the model lock: it is the slow part, and the slot is
	 * not reachable by any key before it is in the table. A leaf MR is
	 * one engine slot. */
	auto backing = impl_->engine->pin(va, len);
	if (!backing)
		return std::move(backing).error();
	std::lock_guard lock(impl_->mu);
	auto key = impl_->take_index(Kind::Mr);
	if (!key) {
		impl_->engine->unpin(*backing);
		return std::move(key).error();
	}
	Object &o = impl_->objects[index_of(*key)];
	o.addr = va;
	o.len = len;
	o.access = access;
	o.backing = *backing;
	return MrHandle{*key, va, len};
}

Result<MrHandle> Mlx5Model::alloc_null_mr()
{
	std::lock_guard lock(impl_->mu);
	auto key = impl_->take_index(Kind::NullMr);
	if (!key)
		return std::move(key).error();
	impl_->objects[index_of(*key)].access = MRSYNC_ACCESS_ALL;
	impl_->objects[index_of(*key)].len = UINT64_MAX;
	return MrHandle{*key, 0, UINT64_MAX};
}

/* Which live (non-free) key still names `key`, in its list or in a UMR not
 * yet executed: deregistering then is the driver bug "dereg before the CQE". */
std::string Mlx5Model::Impl::referenced_by(std::uint32_t key) const
{
	const std::uint64_t inc = objects[index_of(key)].incarnation;
	for (std::uint32_t i = 1; i < kIndices; ++i) {
		const Object &o = objects[i];
		if (o.kind != Kind::Mkey || o.free)
			continue;
		for (const HeldKlm &h : o.klms)
			if (h.klm.key == key && h.incarnation == inc)
				return fmt("key %#x", i << 8 | o.tag);
	}
	for (const Pending &p : sq)
		for (const Klm &k : p.umr.klms)
			if (k.key == key)
				return fmt("a pending UMR of key %#x", p.umr.mkey);
	return {};
}

Status Mlx5Model::dereg_mr(std::uint32_t key)
{
	Object gone;
	{
		std::lock_guard lock(impl_->mu);
		Object *o = impl_->find(key);
		if (!o || (o->kind != Kind::Mr && o->kind != Kind::NullMr))
			return make_error(EINVAL, fmt("mlx5 model dereg_mr: %#x is not an MR", key));
		if (auto by = impl_->referenced_by(key); !by.empty())
			impl_->violation(fmt("dereg of MR %#x while %s still names it (dereg before "
					     "the UMR's completion)", key, by.c_str()));
		gone = std::move(*o);
		*o = Object{};
		impl_->free_indices.push_back(index_of(key));
	}
	if (gone.kind == Kind::Mr && impl_->engine) {
		/* As the kernel revokes an MR at dereg: no new DMA (a packet
		 * translated from now on finds the slot retired), and the pages
		 * are released once in-flight DMA is done (the release tag). */
		impl_->engine->unpin(gone.backing);
		if (auto st = impl_->engine->wait_releases(); !st)
			return st;
	}
	return {};
}

Result<std::uint32_t> Mlx5Model::create_mkey(std::uint16_t max_entries)
{
	if (max_entries == 0)
		return make_error(EINVAL, "mlx5 model create_mkey: max_entries 0");
	std::lock_guard lock(impl_->mu);
	auto key = impl_->take_index(Kind::Mkey);
	if (!key)
		return key;
	Object &o = impl_->objects[index_of(*key)];
	o.max_entries = (max_entries + 3u) / 4 * 4;
	o.free = true;
	o.update_tag = impl_->options.update_tag;
	return key;
}

Status Mlx5Model::destroy_mkey(std::uint32_t key)
{
	std::lock_guard lock(impl_->mu);
	/* The object, whatever tag a UMR gave it since (as mlx5dv_destroy_mkey). */
	const std::uint32_t i = index_of(key);
	Object *o = i && i < kIndices ? &impl_->objects[i] : nullptr;
	if (!o || o->kind != Kind::Mkey)
		return make_error(EINVAL, fmt("mlx5 model destroy_mkey: %#x is not an mkey", key));
	*o = Object{};
	impl_->free_indices.push_back(index_of(key));
	return {};
}

Status Mlx5Model::post_wqe(std::span<const std::byte> wqe, std::uint64_t wr_id)
{
	auto decoded = decode_umr(wqe);
	if (!decoded)
		return std::move(decoded).error();
	DecodedUmr &d = *decoded;
	std::lock_guard lock(impl_->mu);
	const ModelOptions &opt = impl_->options;
	if (impl_->qp_error)
		return make_error(EIO, "mlx5 model post: the UMR QP is in ERR (reset it to RTS)");
	if (d.qpn != 0x1234)
		return make_error(EINVAL, fmt("mlx5 model post: WQE names QP %#x, not the UMR QP", d.qpn));
	if (!(d.umr_flags & MLX5_WQE_UMR_CTRL_FLAG_INLINE))
		return make_error(EOPNOTSUPP, "mlx5 model post: UMR without INLINE (non-inline UMR "
					      "is not supported by this API)");
	if (d.klms.size() > opt.umr_max_klms)
		return make_error(ENOMEM, fmt("mlx5 model post: %zu KLMs exceed the %u one inline "
					      "UMR holds", d.klms.size(), opt.umr_max_klms));
	if (d.mkey_mask & ~kAllowedMask)
		return make_error(EINVAL, fmt("mlx5 model post: mkey_mask %#" PRIx64 " has bits "
					      "outside FREE|MKEY|LEN|START_ADDR|access", d.mkey_mask));
	const std::uint32_t wqebbs = std::uint32_t(wqe.size() / MLX5_SEND_WQE_BB);
	if (impl_->sq_used + wqebbs > opt.sq_wqebbs)
		return make_error(ENOMEM, "mlx5 model post: the UMR QP's send queue is full");
	Object *key = impl_->find(d.mkey);
	if (!key || key->kind != Kind::Mkey)
		return make_error(EINVAL, fmt("mlx5 model post: %#x is not an indirect mkey", d.mkey));
	if (d.mkey_tag != (d.mkey & 0xff) &&
	    (!key->update_tag || !(d.mkey_mask & MLX5_WQE_UMR_CTRL_MKEY_MASK_MKEY)))
		return make_error(EINVAL, fmt("mlx5 model post: UMR changes key %#x's tag to %#x, but "
					      "the key was not created with UPDATE_TAG",
					      d.mkey, d.mkey_tag));
	if (d.klms.size() > key->max_entries)
		return make_error(EINVAL, fmt("mlx5 model post: %zu KLMs exceed key %#x's %u entries",
					      d.klms.size(), d.mkey, key->max_entries));
	if (!d.free) {
		std::uint64_t sum = 0;
		for (const Klm &k : d.klms) {
			if (k.len == 0 || k.len > kMaxKlmBytes)
				return make_error(EINVAL, fmt("mlx5 model post: KLM byte_count %u not in "
							      "(0, 2 GiB]", k.len));
			sum += k.len;
		}
		if (sum != d.len)
			return make_error(EINVAL, fmt("mlx5 model post: mkey len %#" PRIx64 " is not the "
						      "KLMs' %#" PRIx64 " (rdma-core 44 summed it in an int)",
						      d.len, sum));
	}
	if (impl_->last_posted_umr && !(d.fm_ce_se & MLX5_WQE_CTRL_INITIATOR_SMALL_FENCE))
		impl_->violation(fmt("UMR of key %#x posted after a UMR without "
				     "INITIATOR_SMALL_FENCE: it may take effect first", d.mkey));
	impl_->last_posted_umr = true;
	impl_->sq_used += wqebbs;
	impl_->stats.umrs_posted++;
	impl_->stats.umr_klms_posted += d.klms.size();
	impl_->stats.umr_bytes_posted += wqe.size();
	impl_->sq.push_back({std::move(d), wr_id, wqebbs, false});
	return {};
}

void Mlx5Model::Impl::apply(Pending &p)
{
	if (std::exchange(p.applied, true))
		return;
	Object *key = find(p.umr.mkey);
	if (!key || key->kind != Kind::Mkey)
		return;
	/* The key's number changes here: requests that still carry the old
	 * one fail the tag check from now on, as on mlx5. */
	if (p.umr.mkey_mask & MLX5_WQE_UMR_CTRL_MKEY_MASK_MKEY)
		key->tag = p.umr.mkey_tag;
	key->free = p.umr.free;
	if (p.umr.free) {
		key->klms.clear();
		return;
	}
	key->access = p.umr.access;
	key->klms.clear();
	std::uint64_t off = 0;
	key->addr = p.umr.start_addr;
	for (const Klm &k : p.umr.klms) {
		const Object *t = find(k.key);
		key->klms.push_back({k, t ? t->incarnation : 0});
		off += k.len;
	}
	key->len = off;
}

void Mlx5Model::Impl::fail_head(int status)
{
	Pending p = std::move(sq.front());
	sq.pop_front();
	sq_used -= p.wqebbs;
	stats.umr_errors++;
	if (fault_mode == FaultMode::FreeKey)
		if (Object *key = find(p.umr.mkey))
			key->free = true, key->klms.clear();
	cq.push_back({p.wr_id, status, 0x52});
	/* The QP goes to ERR: everything behind it is flushed, signalled or
	 * not, and has no effect (unless it already took effect early). */
	qp_error = true;
	while (!sq.empty()) {
		cq.push_back({sq.front().wr_id, kWcWrFlushErr, 0});
		sq_used -= sq.front().wqebbs;
		sq.pop_front();
	}
	last_posted_umr = false;
}

void Mlx5Model::Impl::execute_head()
{
	Pending &head = sq.front();
	/* Without INITIATOR_SMALL_FENCE the next WQE does not wait for this
	 * UMR: its effect may land first, and this one's land on top. */
	if (sq.size() > 1 && !(sq[1].umr.fm_ce_se & MLX5_WQE_CTRL_INITIATOR_SMALL_FENCE) &&
	    rng() % 2)
		apply(sq[1]);
	if (faults) {
		--faults;
		fail_head(kWcGeneralErr);
		return;
	}
	if (options.fault_one_in && rng() % options.fault_one_in == 0) {
		fault_mode = fault_mode == FaultMode::KeepKey ? FaultMode::FreeKey : FaultMode::KeepKey;
		fail_head(kWcLocQpOpErr);
		return;
	}
	if (options.umr_validates_leaves && !head.umr.free)
		for (const Klm &k : head.umr.klms)
			if (!find(k.key)) {
				fail_head(kWcLocProtErr);
				return;
			}
	apply(head);
	if (head.umr.fm_ce_se & MLX5_WQE_CTRL_CQ_UPDATE)
		cq.push_back({head.wr_id, kWcSuccess, 0});
	sq_used -= head.wqebbs;
	stats.umrs_done++;
	sq.pop_front();
	if (sq.empty())
		last_posted_umr = false;
}

void Mlx5Model::Impl::step()
{
	if (!qp_error && !sq.empty() && chance())
		execute_head();
}

std::size_t Mlx5Model::poll(std::span<Cqe> out)
{
	std::lock_guard lock(impl_->mu);
	impl_->step();
	std::size_t n = 0;
	while (n < out.size() && !impl_->cq.empty()) {
		out[n++] = impl_->cq.front();
		impl_->cq.pop_front();
	}
	return n;
}

Status Mlx5Model::reset_qp()
{
	std::lock_guard lock(impl_->mu);
	/* RESET drops whatever the SQ still holds without completions. */
	impl_->sq.clear();
	impl_->sq_used = 0;
	impl_->qp_error = false;
	impl_->last_posted_umr = false;
	return {};
}

void Mlx5Model::abandon() noexcept
{
	if (impl_->engine)
		impl_->engine->abandon();
}

void Mlx5Model::settle()
{
	std::lock_guard lock(impl_->mu);
	while (!impl_->qp_error && !impl_->sq.empty())
		impl_->execute_head();
}

void Mlx5Model::inject_umr_failures(unsigned n, FaultMode mode)
{
	std::lock_guard lock(impl_->mu);
	impl_->faults = n;
	impl_->fault_mode = mode;
}

std::vector<std::string> Mlx5Model::violations() const
{
	std::lock_guard lock(impl_->mu);
	return impl_->violations;
}

ModelStats Mlx5Model::stats() const
{
	std::lock_guard lock(impl_->mu);
	return impl_->stats;
}

/* One packet's translation: walks the key's KLMs down to leaves, checking
 * at every level what the hardware checks. Returns an ibv_wc_status. */
int Mlx5Model::Impl::walk(std::uint32_t key, std::uint64_t va, std::uint64_t len, bool write,
			  std::uint32_t depth, std::vector<Piece> &out)
{
	const Object *o = find(key);
	if (!o)
		return kWcRemAccessErr;
	const std::uint32_t need = write ? MRSYNC_ACCESS_REMOTE_WRITE : MRSYNC_ACCESS_REMOTE_READ;
	const bool discards = o->kind == Kind::Mkey && o->free && depth > 0 &&
			      !options.poison_refused;
	if (o->kind == Kind::NullMr || discards) {
		out.push_back({nullptr, va, len});
		return kWcSuccess;
	}
	if (o->kind == Kind::Mr) {
		/* A leaf behind an indirect key: its remote right is a hardware
		 * unknown (switch); a key used directly always needs it. */
		if ((depth == 0 || options.leaf_needs_remote_rights) && !(o->access & need))
			return kWcRemAccessErr;
		if (va < o->addr || len > o->len || va - o->addr > o->len - len)
			return kWcRemAccessErr;
		out.push_back({o, va, len});
		return kWcSuccess;
	}
	if (o->free || depth >= options.max_indirection || !(o->access & need))
		return kWcRemAccessErr;
	if (va < o->addr || len > o->len || va - o->addr > o->len - len)
		return kWcRemAccessErr;
	std::uint64_t off = va - o->addr, start = 0;
	const std::uint64_t end = off + len;
	for (const HeldKlm &h : o->klms) {
		const std::uint64_t e_end = start + h.klm.len;
		if (e_end > off && start < end) {
			const std::uint64_t from = std::max(off, start), to = std::min(end, e_end);
			const Object *t = find(h.klm.key);
			if (t && t->incarnation != h.incarnation)
				violation(fmt("KLM of key %#x names %#x, deregistered and reused since "
					      "the UMR: DMA lands in the new MR",
					      index_of(key) << 8 | o->tag, h.klm.key));
			if (int st = walk(h.klm.key, h.klm.addr + (from - start), to - from, write,
					  depth + 1, out))
				return st;
			if (options.tear_per_entry)
				step();
		}
		start = e_end;
		if (start >= end)
			break;
	}
	return kWcSuccess;
}

int Mlx5Model::Impl::packet(std::uint32_t rkey, std::uint64_t va, std::uint64_t len, bool write,
			   std::vector<dma::Piece> &out)
{
	std::vector<Piece> leaves;
	std::lock_guard lock(mu);
	step(); /* a UMR may take effect between any two packets */
	stats.packets++;
	if (int status = this->walk(rkey, va, len, write, 0, leaves)) {
		stats.packets_refused++;
		return status;
	}
	for (const Piece &p : leaves) {
		if (!p.leaf)
			stats.bytes_discarded += p.len;
		out.push_back({p.leaf ? p.leaf->backing : dma::kDiscard, p.addr, p.len});
	}
	return kWcSuccess;
}

int Mlx5Model::Impl::transfer(PeerQp &qp, std::uint32_t rkey, std::uint64_t va, std::byte *buf,
			      std::uint64_t len, bool write)
{
	if (qp.error)
		return kWcWrFlushErr;
	std::vector<std::uint64_t> tickets;
	int status = kWcSuccess;
	for (std::uint64_t done = 0; done < len && status == kWcSuccess;) {
		const std::uint64_t n = std::min<std::uint64_t>(options.mtu, len - done);
		if (!engine) { /* no_memory: nothing to move bytes through */
			std::vector<dma::Piece> pieces;
			status = packet(rkey, va + done, n, write, pieces);
			for (const dma::Piece &p : pieces)
				if (p.backing != dma::kDiscard)
					status = kWcRemAccessErr;
			done += n;
			continue;
		}
		/* The engine translates the packet through packet() under its
		 * submission lock, which dereg's unpin retires the slot under:
		 * a packet that reached a leaf is in the kernel, holding the old
		 * buffer, before the leaf's pages can go. */
		const std::uint64_t ud = next_ud++;
		int refusal = 0;
		const Status st = write ? engine->write(rkey, va + done, {buf + done, n}, ud, &refusal)
					: engine->read(rkey, va + done, {buf + done, n}, ud, &refusal);
		if (!st) {
			status = kWcGeneralErr;
			break;
		}
		tickets.push_back(ud);
		if (refusal)
			status = kWcRemAccessErr;
		done += n;
	}
	for (std::uint64_t ud : tickets) {
		auto c = engine->wait(ud);
		if ((!c || c->result < 0) && status == kWcSuccess)
			status = kWcRemAccessErr;
	}
	if (status)
		qp.error = true;
	return status;
}

int Mlx5Model::rdma_write(PeerQp &qp, std::uint32_t rkey, std::uint64_t va,
			  std::span<const std::byte> bytes)
{
	return impl_->transfer(qp, rkey, va, const_cast<std::byte *>(bytes.data()), bytes.size(),
			       true);
}

int Mlx5Model::rdma_read(PeerQp &qp, std::uint32_t rkey, std::uint64_t va, std::span<std::byte> out)
{
	return impl_->transfer(qp, rkey, va, out.data(), out.size(), false);
}

} // namespace mrsync::mlx5
