/* SPDX-License-Identifier: MIT */
/* Bad input to the uring HCA: each call fails with its documented errno and
 * a message naming the argument, and leaves no slot, pin or key behind. */
#include "uring_test_util.hpp"

#include <cerrno>

namespace mrsync::uring::test {
namespace {

using UringBadInput = UringTest;

void expect_error(const Error &e, int code, const char *needle)
{
	EXPECT_EQ(e.code, code) << e.message;
	EXPECT_NE(e.message.find(needle), std::string::npos)
		<< "'" << e.message << "' should mention '" << needle << "'";
}

template <class T>
void expect_fails(const Result<T> &r, int code, const char *needle)
{
	ASSERT_FALSE(r) << "expected errno " << code << " (" << needle << ")";
	expect_error(r.error(), code, needle);
}

TEST_F(UringBadInput, PinRejectsBadRangesAndLeaksNothing)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	expect_fails(hca->pin(mem.va(), 0), EINVAL, "zero length");
	expect_fails(hca->pin(mem.va() + 1, kPage), EINVAL, "page-aligned");
	expect_fails(hca->pin(mem.va(), kPage + 1), EINVAL, "page-aligned");
	expect_fails(hca->pin(UINT64_MAX - kPage + 1, 2 * kPage), EINVAL, "wraps");
	expect_fails(hca->pin(mem.va(), 2 * kMaxBackingBytes), EINVAL, "1 GiB");

	void *hole = ::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(hole, MAP_FAILED);
	ASSERT_EQ(::munmap(hole, 2 * kPage), 0);
	const auto hole_va = reinterpret_cast<std::uint64_t>(hole);
	auto unmapped = hca->pin(hole_va, 2 * kPage);
	expect_fails(unmapped, EFAULT, "not mapped or not pinnable");
	char range[64];
	std::snprintf(range, sizeof(range), "%#llx", (unsigned long long)hole_va);
	EXPECT_NE(unmapped.error().message.find(range), std::string::npos)
		<< "the message names the range: " << unmapped.error().message;

	ASSERT_EQ(::mprotect(mem.at(1), kPage, PROT_READ), 0);
	expect_fails(hca->pin(mem.va(1), kPage), EFAULT, "not mapped or not pinnable");

	const auto s = hca->stats();
	EXPECT_EQ(s.slots_in_use, 0u) << "a failed pin kept its slot";
	EXPECT_EQ(s.pinned_bytes, 0u);
	const BackingId ok = pin(mem.va(), kPage);
	EXPECT_EQ(ok & 0x3fff, 0u) << "slot 0 should be free again";
}

TEST_F(UringBadInput, CreateAndMapRejectBadTranslations)
{
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	const BackingId b = pin(mem.va(), 2 * kPage);
	const auto reg = [&](std::uint64_t va, std::uint64_t len, std::span<const Extent> t,
			     std::uint32_t access = MRSYNC_ACCESS_ALL) {
		return hca->create(va, len, access, t);
	};
	const Extent one[] = {{0, 2 * kPage, b}};
	expect_fails(reg(mem.va(), 0, one), EINVAL, "zero length");
	expect_fails(reg(mem.va() + 8, 2 * kPage, one), EINVAL, "page-aligned");
	expect_fails(reg(UINT64_MAX - kPage + 1, 2 * kPage, one), EINVAL, "wraps");
	expect_fails(reg(mem.va(), 2 * kPage, one, 1u << 7), EINVAL, "access");
	expect_fails(reg(mem.va(), 2 * kPage, {}), EINVAL, "covers 0");

	const Extent gap[] = {{0, kPage, b}, {2 * kPage, kPage, kNoBacking}};
	expect_fails(reg(mem.va(), 3 * kPage, gap), EINVAL, "extent 1 starts");
	const Extent overlap[] = {{0, 2 * kPage, b}, {kPage, kPage, b}};
	expect_fails(reg(mem.va(), 2 * kPage, overlap), EINVAL, "extent 1 starts");
	const Extent short_of[] = {{0, kPage, b}};
	expect_fails(reg(mem.va(), 2 * kPage, short_of), EINVAL, "covers");
	const Extent past[] = {{0, 3 * kPage, kNoBacking}};
	expect_fails(reg(mem.va(), 2 * kPage, past), EINVAL, "extent 0 has length");
	const Extent ragged[] = {{0, 100, kNoBacking}};
	expect_fails(reg(mem.va(), kPage, ragged), EINVAL, "extent 0 has length");
	const Extent outside[] = {{0, 4 * kPage, b}};
	expect_fails(reg(mem.va(), 4 * kPage, outside), EINVAL, "outside backing");
	const Extent bogus[] = {{0, 2 * kPage, b + 5}};
	expect_fails(reg(mem.va(), 2 * kPage, bogus), EINVAL, "not pinned");

	const Keys keys = create(mem.va(), 2 * kPage, one);
	expect_fails(hca->map(Keys{keys.lkey + 99, keys.lkey + 99}, one), EINVAL, "unknown keys");
	expect_fails(hca->map(Keys{keys.lkey, keys.lkey + 1}, one), EINVAL, "unknown keys");
	expect_fails(hca->map(keys, gap), EINVAL, "extent 1 starts");
	/* A refused map() leaves the old translation in place. */
	const auto data = pattern(2 * kPage, 15);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(), data), int(2 * kPage));
	EXPECT_TRUE(same({mem.at(0), 2 * kPage}, data));

	EXPECT_EQ(hca->stats().registrations, 1u) << "failed creates left keys behind";
	hca->destroy(keys);
	hca->destroy(keys); /* twice: ignored */
	hca->unpin(b);
	hca->unpin(b); /* twice: ignored (logged) */
	ASSERT_TRUE(hca->wait_releases());
	const auto s = hca->stats();
	EXPECT_EQ(s.registrations, 0u);
	EXPECT_EQ(s.slots_in_use, 0u);
	EXPECT_EQ(s.pinned_bytes, 0u);
}

TEST_F(UringBadInput, DmaRejectsBadBuffers)
{
	Pages mem(1);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	expect_error(hca->write(keys.lkey, mem.va(), {}, 1).error(), EINVAL, "zero length");
	std::vector<std::byte> huge(kMaxRequestBytes + 1);
	expect_error(hca->write(keys.lkey, mem.va(), huge, 2).error(), EMSGSIZE, "limit");
	expect_error(hca->read(keys.lkey, mem.va(), huge, 3).error(), EMSGSIZE, "limit");
	auto none = hca->wait(1, std::chrono::milliseconds(10));
	ASSERT_FALSE(none);
	EXPECT_EQ(none.error().code, ENOENT) << "a rejected request has no completion";
	const auto s = hca->stats();
	EXPECT_EQ(s.dma_submitted, 0u);
	EXPECT_EQ(s.dma_completed, 0u);
}

TEST(UringBadOptions, CreateRejectsBadOptions)
{
	expect_fails(Hca::create(HcaOptions{.queue_depth = 0}), EINVAL, "queue_depth");
	expect_fails(Hca::create(HcaOptions{.staging_bytes = 1 << 20}), EINVAL, "staging_bytes");
	expect_fails(Hca::create(HcaOptions{.staging_bytes = (8 << 20) + 1}), EINVAL,
		     "staging_bytes");
	const DriverFactory *f = find_driver("uring");
	ASSERT_NE(f, nullptr);
	auto d = f->create(DriverConfig{.entry_size = 1000});
	ASSERT_FALSE(d);
	EXPECT_EQ(d.error().code, EINVAL);
}

} // namespace
} // namespace mrsync::uring::test
