/* SPDX-License-Identifier: MIT */
/* Backings of the uring HCA: a pin ends when the kernel's release tag
 * arrives, hugepages really go back to the pool, the slot table is finite,
 * RLIMIT_MEMLOCK is explained, and a fork child leaves the parent's ring alone. */
#include "uring_test_util.hpp"

#include "support/privileges.hpp"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>

namespace mrsync::uring::test {
namespace {

using UringPin = UringTest;

constexpr std::uint64_t kHuge = 2ull << 20;

long meminfo(const char *key)
{
	std::ifstream in("/proc/meminfo");
	std::string name;
	long value = -1;
	std::string unit;
	while (in >> name >> value) {
		if (name == std::string(key) + ":")
			return value;
		std::getline(in, unit);
	}
	return -1;
}

long nr_hugepages()
{
	std::ifstream in("/proc/sys/vm/nr_hugepages");
	long n = 0;
	in >> n;
	return n;
}

TEST_F(UringPin, PinnedBytesDropWhenTheReleaseTagIsCollected)
{
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	const BackingId b = pin(mem.va(), 4 * kPage);
	EXPECT_EQ(hca->stats().pinned_bytes, 4 * kPage);
	EXPECT_EQ(hca->stats().slots_in_use, 1u);

	hca->unpin(b);
	auto s = hca->stats();
	EXPECT_EQ(s.pinned_bytes, 4 * kPage) << "nothing counts as released before its tag";
	EXPECT_EQ(s.slots_releasing, 1u);
	EXPECT_EQ(s.slots_in_use, 1u);

	/* No DMA uses the buffer, so the kernel posted the tag at once; the
	 * fence collects it. */
	ASSERT_TRUE(hca->fence());
	s = hca->stats();
	EXPECT_EQ(s.pinned_bytes, 0u);
	EXPECT_EQ(s.slots_releasing, 0u);
	EXPECT_EQ(s.slots_in_use, 0u);
	EXPECT_EQ(s.release_tags, 1u);

	const BackingId again = pin(mem.va(), 4 * kPage);
	EXPECT_NE(again, kNoBacking);
	hca->unpin(again);
	Completion none[1];
	EXPECT_EQ(hca->poll(none), 0u) << "tags are not DMA completions";
	EXPECT_EQ(hca->stats().pinned_bytes, 0u) << "poll() collects tags too";
}

TEST_F(UringPin, ReplacedHugepageGoesBackToThePool)
{
	if (nr_hugepages() == 0)
		GTEST_SKIP() << "no hugepages reserved (/proc/sys/vm/nr_hugepages is 0); "
				"echo 64 > /proc/sys/vm/nr_hugepages to run this test";
	Pages mem(2, kHuge, MAP_HUGETLB);
	if (!mem.ok())
		GTEST_SKIP() << "cannot map two free 2 MiB hugepages";
	std::memset(mem.at(0), 0x44, mem.bytes());
	const BackingId h0 = pin(mem.va(0), kHuge);
	const BackingId h1 = pin(mem.va(1), kHuge);
	const Extent t[] = {{0, kHuge, h0}, {kHuge, kHuge, h1}};
	const Keys keys = create(mem.va(), 2 * kHuge, t);

	ASSERT_TRUE(mem.remap(1, MAP_HUGETLB)) << "no free hugepage for the replacement";
	const auto data = pattern(64 * 1024, 8);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), data), int(data.size()));
	EXPECT_TRUE(all_bytes({mem.at(1), data.size()}, std::byte{0})) << "stale hugepage slot";

	const long free_before = meminfo("HugePages_Free");
	const BackingId fresh = pin(mem.va(1), kHuge);
	const Extent split[] = {{0, kHuge, h0}, {kHuge, kHuge, fresh}};
	ASSERT_TRUE(hca->map(keys, split));
	ASSERT_TRUE(hca->fence());
	hca->unpin(h1);
	ASSERT_TRUE(hca->wait_releases());
	EXPECT_EQ(hca->stats().pinned_bytes, 2 * kHuge);

	/* The tag is posted as the kernel starts dropping the buffer; give the
	 * page a moment to reach the free list. */
	long free_after = meminfo("HugePages_Free");
	for (int i = 0; i < 100 && free_after <= free_before; ++i) {
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
		free_after = meminfo("HugePages_Free");
	}
	EXPECT_EQ(free_after, free_before + 1) << "the replaced hugepage was not freed";

	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1), data), int(data.size()));
	EXPECT_TRUE(same({mem.at(1), data.size()}, data));
}

TEST_F(UringPin, SlotTableIsFiniteAndComesBack)
{
	Pages mem(kMaxBackings + 1);
	ASSERT_TRUE(mem.ok());
	std::vector<BackingId> held;
	held.reserve(kMaxBackings);
	for (std::size_t i = 0; i < kMaxBackings; ++i) {
		auto b = hca->pin(mem.va(i), kPage);
		ASSERT_TRUE(b) << "pin " << i << ": " << b.error().message;
		held.push_back(*b);
	}
	auto full = hca->pin(mem.va(kMaxBackings), kPage);
	ASSERT_FALSE(full);
	EXPECT_EQ(full.error().code, ENOSPC);
	EXPECT_NE(full.error().message.find("slots"), std::string::npos) << full.error().message;

	/* pin() collects release tags itself before giving up. */
	hca->unpin(held.back());
	held.pop_back();
	auto next = hca->pin(mem.va(kMaxBackings), kPage);
	ASSERT_TRUE(next) << next.error().message;
	held.push_back(*next);

	for (BackingId b : held)
		hca->unpin(b);
	ASSERT_TRUE(hca->wait_releases());
	EXPECT_EQ(hca->stats().slots_in_use, 0u);
	EXPECT_EQ(hca->stats().pinned_bytes, 0u);
}

using mrsync::test::limit_memlock_as_own_user;

TEST(UringPinLimits, MemlockLimitIsExplained)
{
	std::string why;
	if (!Hca::available(why))
		GTEST_SKIP() << why;
	in_child([]() -> std::string {
		if (!limit_memlock_as_own_user(1 << 20))
			return "cannot drop CAP_IPC_LOCK, lower RLIMIT_MEMLOCK or become nobody";
		/* An earlier child's ring (--gtest_repeat) is torn down by a kernel
		 * worker after it exits, its pins charged until then. */
		auto hca = Hca::create();
		for (int tries = 0; tries < 200 && !hca && hca.error().code == ENOMEM; ++tries) {
			::usleep(10000);
			hca = Hca::create();
		}
		if (!hca)
			return "create: " + hca.error().message;
		Pages mem(1024); /* 4 MiB, above the 1 MiB limit */
		auto big = (*hca)->pin(mem.va(), mem.bytes());
		if (big)
			return "a 4 MiB pin under a 1 MiB RLIMIT_MEMLOCK succeeded";
		const std::string &msg = big.error().message;
		if (big.error().code != ENOMEM)
			return "expected ENOMEM, got: " + msg;
		for (const char *needle : {"RLIMIT_MEMLOCK", "ulimit -l", "LimitMEMLOCK=", "CAP_IPC_LOCK"})
			if (msg.find(needle) == std::string::npos)
				return std::string("the message lacks '") + needle + "': " + msg;
		if ((*hca)->stats().slots_in_use != 0)
			return "the failed pin kept its slot";
		auto small_pin = (*hca)->pin(mem.va(), 16 * kPage);
		if (!small_pin)
			return "a 64 KiB pin failed: " + small_pin.error().message;
		return "";
	});
}

/* A fork child drops the HCA without touching the parent's ring: the
 * parent's pins and registrations keep working. */
TEST_F(UringPin, AbandonInForkChildLeavesTheParentsRingAlone)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto before = hca->stats();

	in_child([&]() -> std::string {
		hca->abandon();
		const auto data = pattern(kPage, 9);
		auto st = hca->write(keys.lkey, mem.va(), data, 1);
		if (st || st.error().code != ESHUTDOWN)
			return "DMA after abandon() was not refused with ESHUTDOWN";
		Completion c[4];
		auto w = hca->wait_one();
		if (hca->poll(c) != 0 || w || w.error().code != ESHUTDOWN || hca->fence())
			return "collecting completions after abandon() did not fail cleanly";
		hca->unpin(0); /* ignored: the slot table is the parent's */
		hca.reset();
		return "";
	});

	EXPECT_EQ(hca->stats().pinned_bytes, before.pinned_bytes);
	const auto data = pattern(2 * kPage, 10);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(), data), int(2 * kPage));
	EXPECT_TRUE(same({mem.at(0), 2 * kPage}, data)) << "the parent's slot must still serve";
}

} // namespace
} // namespace mrsync::uring::test
