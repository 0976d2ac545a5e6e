// A registered page is unmapped (a hole) and mapped again by one thread while
// another thread's lookup covers it. The lookup re-pins the hole's entry:
// userfaultfd's prepare_pin arms "the mapped parts" (none: a hole) and
// checks them (none: nothing to object to), then the pin -- if the new
// mapping appeared in between -- takes its page, which no userfaultfd
// registration covers. Nothing is wrong yet (that page is current), but the
// next change of the page (mmap(MAP_FIXED) over it, after which the owner
// looks it up) sends no event: the entry stays on the old page.
//
// Ordering: the owner thread does munmap, mmap, then (after joining the
// racing thread) mmap(MAP_FIXED) again, and only then its checked lookup.
// The racing thread never DMAs; it only calls mrsync_get on the page.
#include <atomic>
#include <random>
#include <thread>
#include <fstream>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

TEST(Hole, FilledWhileAnotherThreadLooksItUp)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(4 * kPage);
	ASSERT_TRUE(area);
	std::byte *const p = area.at(kPage);
	{
		auto reg = ctx->get(area.at(0), 4 * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	Tally t;
	std::uint64_t racing_pins = 0; /* lookups of the hole that worked */
	std::minstd_rand rng(1);
	const std::uint64_t rounds = iterations(400);
	for (std::uint64_t i = 0; i < rounds; ++i) {
		std::atomic<int> phase{0};
		std::atomic<std::uint64_t> pinned{0};
		std::thread looker([&] {
			while (phase.load() == 0) {
			}
			while (phase.load() == 1) {
				mrsync_reg reg;
				if (mrsync_get(ctx->c_handle(), p, 64, MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0) {
					++pinned;
					mrsync_put(ctx->c_handle(), &reg);
				}
			}
		});
		ASSERT_EQ(munmap(p, kPage), 0);
		phase = 1;
		/* let the looker get going, then fill the hole */
		for (volatile unsigned spin = rng() % 200000; spin; spin = spin - 1) {
		}
		if (mmap(p, kPage, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p) {
			/* Another mmap of the process took the hole: the page is not
			 * ours any more (never seen but under sanitizers). */
			const int err = errno;
			phase = 2;
			looker.join();
			for (std::size_t page : {0, 2, 3})
				munmap(area.at(page * kPage), kPage);
			area.forget();
			GTEST_SKIP() << "the hole was taken by another mapping of the process ("
				     << std::strerror(err) << ") after " << i << " rounds";
		}
		std::memset(p, 0x42, kPage);
		for (volatile unsigned spin = 20000; spin; spin = spin - 1) {
		}
		phase = 2;
		looker.join();
		racing_pins += pinned;
		/* the owner changes the page again, then uses it */
		ASSERT_TRUE(remap_fresh(p, kPage));
		write_check(*ctx, p + 8, 256, t, unsigned(i));
	}
	tell("hole filled during another thread's lookup, then replaced", t);
	std::printf("  racing lookups that worked: %llu\n", (unsigned long long)racing_pins);
	EXPECT_EQ(t.lost, 0u) << "the owner's lookup after its own mmap(MAP_FIXED) returned a "
				 "translation to the page that mapping replaced";
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

} // namespace
} // namespace mrsync::test::adversary

namespace mrsync::test::adversary {
namespace {

bool uffd_armed(const void *addr)
{
	std::ifstream f("/proc/self/smaps");
	std::string line;
	bool inside = false;
	const auto a = reinterpret_cast<std::uintptr_t>(addr);
	while (std::getline(f, line)) {
		unsigned long lo, hi;
		if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(' ') < 40 &&
		    line[8] != ':') {
			inside = lo <= a && a < hi;
		} else if (inside && line.rfind("VmFlags:", 0) == 0) {
			return line.find(" uw") != std::string::npos;
		}
	}
	return false;
}

/* The same steps in one thread: the re-pin after the refill arms the new
 * mapping, and the replacement is seen. The control for the test above. */
TEST(Hole, SingleThreadControl)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(4 * kPage);
	std::byte *const p = area.at(kPage);
	{
		auto reg = ctx->get(area.at(0), 4 * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	if (!kmod())
		EXPECT_TRUE(uffd_armed(p));
	ASSERT_EQ(munmap(p, kPage), 0);
	mrsync_reg reg;
	int rc = mrsync_get(ctx->c_handle(), p, 64, MRSYNC_ACCESS_LOCAL_WRITE, &reg);
	EXPECT_EQ(rc, -EFAULT) << "a lookup of a hole";
	if (!rc)
		mrsync_put(ctx->c_handle(), &reg);
	ASSERT_EQ(mmap(p, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
		       -1, 0),
		  static_cast<void *>(p));
	rc = mrsync_get(ctx->c_handle(), p, 64, MRSYNC_ACCESS_LOCAL_WRITE, &reg);
	EXPECT_EQ(rc, 0) << mrsync_last_error();
	if (!rc)
		mrsync_put(ctx->c_handle(), &reg);
	if (!kmod())
		EXPECT_TRUE(uffd_armed(p)) << "the re-pin armed the new mapping";
	ASSERT_TRUE(remap_fresh(p, kPage));
	Tally t;
	write_check(*ctx, p + 8, 256, t, 1);
	tell("hole refilled, one thread", t);
	EXPECT_EQ(t.delivered, 1u) << t.line();
}

} // namespace
} // namespace mrsync::test::adversary
