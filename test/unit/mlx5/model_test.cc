/* SPDX-License-Identifier: MIT */
/* Mlx5Model on its own, driven as a driver would drive a ConnectX: what
 * MLX5.md §5(b) says the hardware enforces, each shown to bite. */
#include "mlx5_test_util.hpp"

#include <cstring>

namespace mrsync::mlx5::test {
namespace {

TEST_F(ModelTest, VaBasedIndirectKeyMovesBytesIntoTheLeaf)
{
	Pages p(4);
	ASSERT_TRUE(p.ok());
	const MrHandle mr = reg(p, 0, 4);
	const std::uint32_t key = mkey();
	ASSERT_TRUE(umr(key, p.va(), {{mr.key, p.va(), std::uint32_t(4 * kPage)}}));
	EXPECT_EQ(complete(1)[0].status, kWcSuccess);
	const auto data = pattern(6000, 1); /* two packets, across a page */
	EXPECT_EQ(write(key, p.va(1) + 100, data), kWcSuccess);
	EXPECT_TRUE(same({p.at(1) + 100, data.size()}, data));
	std::vector<std::byte> back(data.size());
	PeerQp qp;
	EXPECT_EQ(model->rdma_read(qp, key, p.va(1) + 100, back), kWcSuccess);
	EXPECT_TRUE(same(back, data));
	EXPECT_TRUE(model->violations().empty());
}

TEST_F(ModelTest, PostTimeChecksRollBack)
{
	Pages p(1);
	ASSERT_TRUE(p.ok());
	const MrHandle mr = reg(p, 0, 1);
	const std::uint32_t key = mkey();
	const Klm one{mr.key, p.va(), std::uint32_t(kPage)};
	UmrSpec spec{.mkey = key, .qpn = kQpn, .access = MRSYNC_ACCESS_ALL, .start_addr = p.va(),
		     .len = kPage};
	spec.inline_klms = false;
	EXPECT_EQ(model->post_wqe(build_umr(spec, {&one, 1}), 1).error().code, EOPNOTSUPP);
	spec.inline_klms = true;
	/* A QP whose 512-byte WQEs carry 20 KLMs (MLX5.md §1) takes no 21st. */
	ModelOptions small;
	small.umr_max_klms = 20;
	auto small_model = Mlx5Model::create(small);
	ASSERT_TRUE(small_model);
	auto small_key = (*small_model)->create_mkey(32);
	ASSERT_TRUE(small_key);
	std::vector<Klm> many(21, Klm{0x100, p.va(), 64});
	UmrSpec too_many = spec;
	too_many.mkey = *small_key;
	too_many.len = 64 * many.size();
	EXPECT_EQ((*small_model)->post_wqe(build_umr(too_many, many), 2).error().code, ENOMEM);
	/* rdma-core 44 summed the length in an int: 3 x 1 GiB came out wrong. */
	std::vector<Klm> big(3, Klm{mr.key, p.va(), 1u << 30});
	spec.len = std::uint64_t(std::int32_t(3ull << 30));
	EXPECT_EQ(model->post_wqe(build_umr(spec, big), 3).error().code, EINVAL);
	spec.mkey = mr.key; /* an MR is not an indirect key */
	spec.len = kPage;
	EXPECT_EQ(model->post_wqe(build_umr(spec, {&one, 1}), 4).error().code, EINVAL);
	EXPECT_EQ(model->stats().umrs_posted, 0u);
}

TEST_F(ModelTest, PacketsAreCheckedForBoundsAccessAndFreeKeys)
{
	Pages p(2);
	ASSERT_TRUE(p.ok());
	const MrHandle mr = reg(p, 0, 2);
	const std::uint32_t key = mkey(), ro = mkey(), never = mkey();
	ASSERT_TRUE(umr(key, p.va(), {{mr.key, p.va(), std::uint32_t(kPage)}}));
	ASSERT_TRUE(umr(ro, p.va(), {{mr.key, p.va(), std::uint32_t(kPage)}}, true,
			MRSYNC_ACCESS_REMOTE_READ));
	complete(2);
	const auto data = pattern(64, 2);
	std::memset(p.at(1), 0, kPage);
	EXPECT_EQ(write(key, p.va(1), data), kWcRemAccessErr) << "beyond the key's length";
	EXPECT_EQ(write(ro, p.va(), data), kWcRemAccessErr) << "no remote write right";
	EXPECT_EQ(write(never, p.va(), data), kWcRemAccessErr) << "a never-configured key";
	EXPECT_EQ(write(key + 0x100 * 77, p.va(), data), kWcRemAccessErr) << "no such key";
	EXPECT_TRUE(uring::test::all_bytes(p.page(1), std::byte{0}));
	/* A refused request puts the requester in error: later ones are flushed. */
	PeerQp qp;
	EXPECT_EQ(model->rdma_write(qp, never, p.va(), data), kWcRemAccessErr);
	EXPECT_EQ(model->rdma_write(qp, key, p.va(), data), kWcWrFlushErr);
}

TEST_F(ModelTest, IndirectionDeeperThanTheCapIsRefused)
{
	Pages p(1);
	ASSERT_TRUE(p.ok());
	const MrHandle mr = reg(p, 0, 1);
	const std::uint32_t len = kPage;
	std::uint32_t inner = mr.key;
	std::vector<std::uint32_t> chain;
	for (std::uint32_t level = 0; level < options.max_indirection + 1; ++level) {
		const std::uint32_t k = mkey();
		ASSERT_TRUE(umr(k, 0, {{inner, level ? 0 : p.va(), len}}));
		chain.push_back(k);
		inner = k;
	}
	complete(chain.size());
	const auto data = pattern(64, 3);
	EXPECT_EQ(write(chain[options.max_indirection - 1], 0, data), kWcSuccess);
	EXPECT_EQ(write(chain[options.max_indirection], 0, data), kWcRemAccessErr);
}

/* Why a hole may not point at a null MR: the write "succeeds" and is gone.
 * A never-configured key refuses it instead. */
TEST_F(ModelTest, NullMrDiscardsWhereAFreeKeyRefuses)
{
	Pages p(1);
	ASSERT_TRUE(p.ok());
	auto null_mr = model->alloc_null_mr();
	ASSERT_TRUE(null_mr);
	const std::uint32_t via_null = mkey(), via_free = mkey(), poison = mkey();
	ASSERT_TRUE(umr(via_null, p.va(), {{null_mr->key, 0, std::uint32_t(kPage)}}));
	ASSERT_TRUE(umr(via_free, p.va(), {{poison, 0, std::uint32_t(kPage)}}));
	complete(2);
	const auto data = pattern(kPage, 4);
	EXPECT_EQ(write(via_null, p.va(), data), kWcSuccess);
	EXPECT_EQ(model->stats().bytes_discarded, kPage);
	EXPECT_EQ(write(via_free, p.va(), data), kWcRemAccessErr);
}

/* Negative control "dereg before the CQE": the model must catch it. */
TEST_F(ModelTest, DeregBeforeTheUmrCompletionIsCaught)
{
	Pages p(2);
	ASSERT_TRUE(p.ok());
	const MrHandle a = reg(p, 0, 1), b = reg(p, 1, 1);
	const std::uint32_t key = mkey();
	ASSERT_TRUE(umr(key, 0, {{a.key, p.va(0), std::uint32_t(kPage)}}));
	complete(1);
	/* Right: the replacing UMR's completion, then the dereg. */
	ASSERT_TRUE(umr(key, 0, {{b.key, p.va(1), std::uint32_t(kPage)}}));
	complete(1);
	ASSERT_TRUE(model->dereg_mr(a.key));
	EXPECT_TRUE(model->violations().empty());
	/* Wrong: dereg while the UMR that drops b is still in the SQ. */
	const MrHandle c = reg(p, 0, 1);
	options.apply_percent = 0;
	ASSERT_TRUE(umr(key, 0, {{c.key, p.va(0), std::uint32_t(kPage)}}));
	ASSERT_TRUE(model->dereg_mr(b.key));
	const auto v = model->violations();
	ASSERT_EQ(v.size(), 1u);
	EXPECT_NE(v[0].find("dereg before the UMR's completion"), std::string::npos) << v[0];
}

/* A KLM naming a deregistered MR whose key was reused: the hardware writes
 * into the new MR (same index, tag 0); the model does too and says so. */
TEST_F(ModelTest, AReusedLkeyMisdirectsAndIsCaught)
{
	Pages p(2);
	ASSERT_TRUE(p.ok());
	const MrHandle a = reg(p, 0, 1);
	const std::uint32_t key = mkey();
	ASSERT_TRUE(umr(key, 0, {{a.key, p.va(0), std::uint32_t(kPage)}}));
	complete(1);
	ASSERT_TRUE(model->dereg_mr(a.key)); /* a bug: the key still names it */
	const MrHandle b = reg(p, 0, 1);     /* LIFO: a's index, tag 0 */
	ASSERT_EQ(b.key, a.key);
	const auto data = pattern(64, 5);
	EXPECT_EQ(write(key, 0, data), kWcSuccess);
	bool misdirect = false;
	for (const auto &v : model->violations())
		misdirect |= v.find("deregistered and reused") != std::string::npos;
	EXPECT_TRUE(misdirect);
}

/* Negative control "missing fence bit": two UMRs of one key, the second
 * without INITIATOR_SMALL_FENCE. The model reports it at post, and the
 * first list sometimes lands last -- DMA then goes to the old leaf. */
TEST_F(ModelTest, AMissingSmallFenceIsCaughtAndReordersTheLists)
{
	Pages p(2);
	ASSERT_TRUE(p.ok());
	const MrHandle a = reg(p, 0, 1), b = reg(p, 1, 1);
	const std::uint32_t key = mkey();
	const auto data = pattern(64, 6);
	for (bool fence : {true, false}) {
		int stale = 0;
		for (int i = 0; i < 40; ++i) {
			std::memset(p.at(0), 0, 2 * kPage);
			ASSERT_TRUE(umr(key, 0, {{a.key, p.va(0), std::uint32_t(kPage)}}));
			ASSERT_TRUE(umr(key, 0, {{b.key, p.va(1), std::uint32_t(kPage)}}, fence));
			model->settle();
			complete(2);
			ASSERT_EQ(write(key, 0, data), kWcSuccess);
			stale += same({p.at(0), data.size()}, data);
		}
		if (fence) {
			EXPECT_EQ(stale, 0);
			EXPECT_TRUE(model->violations().empty());
		} else {
			EXPECT_GT(stale, 0) << "without the fence bit the old list never won";
			EXPECT_FALSE(model->violations().empty());
		}
	}
}

TEST_F(ModelTest, AnErrorCompletionFlushesTheRestUntilReset)
{
	Pages p(1);
	ASSERT_TRUE(p.ok());
	const MrHandle mr = reg(p, 0, 1);
	const std::uint32_t key = mkey(), other = mkey();
	model->inject_umr_failures(1, FaultMode::FreeKey);
	ASSERT_TRUE(umr(key, 0, {{mr.key, p.va(), std::uint32_t(kPage)}}));
	ASSERT_TRUE(umr(other, 0, {{mr.key, p.va(), std::uint32_t(kPage)}}));
	const auto cqes = complete(2);
	EXPECT_EQ(cqes[0].status, kWcGeneralErr);
	EXPECT_EQ(cqes[1].status, kWcWrFlushErr);
	EXPECT_EQ(umr(key, 0, {{mr.key, p.va(), std::uint32_t(kPage)}}).error().code, EIO);
	EXPECT_EQ(write(other, 0, pattern(8, 7)), kWcRemAccessErr) << "flushed: no effect";
	ASSERT_TRUE(model->reset_qp());
	ASSERT_TRUE(umr(key, 0, {{mr.key, p.va(), std::uint32_t(kPage)}}));
	EXPECT_EQ(complete(1)[0].status, kWcSuccess);
	EXPECT_EQ(write(key, 0, pattern(8, 7)), kWcSuccess);
}

} // namespace
} // namespace mrsync::mlx5::test
