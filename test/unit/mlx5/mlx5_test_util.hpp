/* SPDX-License-Identifier: MIT */
/* Helpers of the mlx5 tests: a model per test, UMRs posted and completed by
 * hand (as a driver would), and the pages of test/unit/uring. */
#ifndef MRSYNC_TEST_MLX5_UTIL_HPP
#define MRSYNC_TEST_MLX5_UTIL_HPP

#include <gtest/gtest.h>

#include <mrsync/mrsync.h>
#include <mrsync/uring.hpp>

#include "../uring/uring_test_util.hpp"
#include "mlx5_model.hpp"
#include "umr_wqe.hpp"

namespace mrsync::mlx5::test {

using uring::test::kPage;
using uring::test::Pages;
using uring::test::pattern;
using uring::test::same;

inline constexpr std::uint32_t kQpn = 0x1234; /* the model's UMR QP */

class ModelTest : public ::testing::Test {
protected:
	void SetUp() override
	{
		std::string why;
		if (!uring::Hca::available(why))
			GTEST_SKIP() << "io_uring unavailable: " << why;
		auto m = Mlx5Model::create(options);
		ASSERT_TRUE(m) << m.error().message;
		model = std::move(m).value();
	}

	MrHandle reg(const Pages &p, std::size_t first, std::size_t n,
		     std::uint32_t access = MRSYNC_ACCESS_ALL)
	{
		auto mr = model->reg_mr(p.va(first), n * kPage, access);
		EXPECT_TRUE(mr) << mr.error().message;
		return mr ? *mr : MrHandle{};
	}
	std::uint32_t mkey()
	{
		auto k = model->create_mkey(kUmrKlms);
		EXPECT_TRUE(k) << k.error().message;
		return k ? *k : 0;
	}
	/** Posts a UMR giving `key` the list `klms` at `start`. */
	Status umr(std::uint32_t key, std::uint64_t start, std::vector<Klm> klms, bool fence = true,
		   std::uint32_t access = MRSYNC_ACCESS_ALL)
	{
		std::uint64_t len = 0;
		for (const Klm &k : klms)
			len += k.len;
		UmrSpec spec{.mkey = key, .qpn = kQpn, .access = access, .start_addr = start,
			     .len = len, .small_fence = fence};
		return model->post_wqe(build_umr(spec, klms), ++wr);
	}
	/** Polls until `n` completions came; returns them. */
	std::vector<Cqe> complete(std::size_t n)
	{
		std::vector<Cqe> got;
		for (int i = 0; got.size() < n && i < 100000; ++i) {
			Cqe c[8];
			const std::size_t k = model->poll(c);
			got.insert(got.end(), c, c + k);
		}
		EXPECT_EQ(got.size(), n);
		return got;
	}
	int write(std::uint32_t rkey, std::uint64_t va, std::span<const std::byte> b)
	{
		PeerQp qp;
		return model->rdma_write(qp, rkey, va, b);
	}

	ModelOptions options;
	std::unique_ptr<Mlx5Model> model;
	std::uint64_t wr = 0;
};

} // namespace mrsync::mlx5::test

#endif
