/* SPDX-License-Identifier: MIT */
/* The driver's key pool on the model: once a registration is destroyed and
 * its key index handed to the next registration, a peer that kept the old
 * rkey must be refused, not write into the new registration. Quarantine
 * only delays that; the tag rotation is what makes the old number fail.
 * The driver is driven directly (pin, create, destroy) so that the reuse of
 * the index is certain, not left to the core's eviction clock. */
#include <gtest/gtest.h>

#include <cstring>

#include "mlx5_driver.hpp"
#include "mlx5_test_util.hpp"

namespace mrsync::mlx5::test {
namespace {

constexpr std::size_t kPages = 16;

struct Outcome {
	std::uint32_t first_rkey = 0;
	std::uint32_t second_rkey = 0;
	int stale_write = -1;  /**< ibv_wc_status of the write through the first rkey */
	bool landed = false;   /**< its bytes reached the second registration's pages */
	DriverStats stats;
	std::vector<std::string> violations;
};

/* Registers pages, destroys the registration, registers the same pages
 * again (the pool hands the same index back: quarantine 0), then writes
 * through the first registration's rkey. */
Outcome reuse_the_index(bool rotate)
{
	Outcome out;
	auto model = Mlx5Model::create();
	EXPECT_TRUE(model) << model.error().message;
	if (!model)
		return out;
	Mlx5Model &m = **model;
	DriverOptions options;
	options.quarantine = 0;
	options.test_no_tag_rotation = !rotate;
	auto driver = Mlx5Driver::create(std::move(model).value(), options);
	EXPECT_TRUE(driver) << driver.error().message;
	if (!driver)
		return out;
	Mlx5Driver &d = **driver;
	Pages buf{kPages};
	const std::uint64_t len = kPages * kPage;
	auto registration = [&]() -> Keys {
		auto b = d.pin(buf.va(0), len);
		EXPECT_TRUE(b) << b.error().message;
		const Extent all{0, len, b ? *b : kNoBacking};
		auto k = d.create(buf.va(0), len, MRSYNC_ACCESS_ALL, {&all, 1});
		EXPECT_TRUE(k) << k.error().message;
		if (!d.fence())
			ADD_FAILURE() << "fence";
		return k ? *k : Keys{};
	};
	const Keys first = registration();
	d.destroy(first);
	EXPECT_TRUE(d.fence());
	const Keys second = registration();
	out.first_rkey = first.rkey;
	out.second_rkey = second.rkey;
	std::memset(buf.at(0), 0, len);
	const auto data = pattern(kPage, 5);
	PeerQp qp;
	out.stale_write = m.rdma_write(qp, first.rkey, buf.va(2), data);
	out.landed = same({buf.at(2), data.size()}, data);
	/* The second registration works through its own key. */
	PeerQp fresh;
	EXPECT_EQ(m.rdma_write(fresh, second.rkey, buf.va(4), data), kWcSuccess);
	EXPECT_TRUE(same({buf.at(4), data.size()}, data));
	out.stats = d.stats();
	out.violations = m.violations();
	d.destroy(second);
	EXPECT_TRUE(d.fence());
	return out;
}

TEST(Mlx5KeyPool, AStaleRkeyIsRefusedOnceItsIndexServesTheNextRegistration)
{
	const Outcome o = reuse_the_index(true);
	std::printf("rkey %#x destroyed, index reused as %#x (%llu keys reused, %llu retagged); "
		    "write through the old rkey: status %d, landed %d\n",
		    o.first_rkey, o.second_rkey, (unsigned long long)o.stats.keys_reused,
		    (unsigned long long)o.stats.keys_retagged, o.stale_write, int(o.landed));
	EXPECT_GE(o.stats.keys_reused, 1u) << "the pool did not hand the index back";
	EXPECT_EQ(o.first_rkey >> 8, o.second_rkey >> 8) << "not the same index";
	EXPECT_NE(o.first_rkey, o.second_rkey);
	EXPECT_EQ(o.stale_write, kWcRemAccessErr);
	EXPECT_FALSE(o.landed) << "a stale rkey wrote into the next registration";
	EXPECT_TRUE(o.violations.empty()) << o.violations[0];
}

/* Negative control: parked under the same number, the old rkey is the new
 * registration's rkey, and the stale write lands in its pages. */
TEST(Mlx5KeyPool, NegativeControlWithoutTagRotationTheStaleRkeyWritesIntoTheNextRegistration)
{
	const Outcome o = reuse_the_index(false);
	std::printf("no rotation: rkey %#x reused as %#x; stale write status %d, landed %d\n",
		    o.first_rkey, o.second_rkey, o.stale_write, int(o.landed));
	EXPECT_EQ(o.first_rkey, o.second_rkey);
	EXPECT_EQ(o.stale_write, kWcSuccess);
	EXPECT_TRUE(o.landed);
}

TEST(Mlx5KeyPool, ATagChangeOnAKeyCreatedWithoutUpdateTagIsRefusedAtPost)
{
	ModelOptions options;
	options.update_tag = false;
	auto model = Mlx5Model::create(options);
	ASSERT_TRUE(model) << model.error().message;
	auto key = (*model)->create_mkey(kUmrKlms);
	ASSERT_TRUE(key);
	UmrSpec spec{.mkey = *key, .qpn = kQpn, .invalidate = true};
	spec.new_tag = std::uint16_t((*key + 1) & 0xff);
	auto st = (*model)->post_wqe(build_umr(spec, {}), 1);
	ASSERT_FALSE(st);
	EXPECT_NE(st.error().message.find("UPDATE_TAG"), std::string::npos) << st.error().message;
}

} // namespace
} // namespace mrsync::mlx5::test
