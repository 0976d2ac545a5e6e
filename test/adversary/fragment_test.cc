// A large registration fragmented by many single-page replacements: each
// replaced page is re-pinned as its own backing (an io_uring buffer slot;
// the HCA has 16384), and compaction re-pins every still-current run of the
// old backing as a backing of its own. Every other page replaced, then every
// page looked up: nothing may be lost, and memory that is mapped and
// private must still be served (or the refusal must name a limit the
// application can act on).
#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

TEST(Fragment, EveryOtherPageReplaced)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	const std::size_t pages = options().iterations ? options().iterations : 20480;
	Mapping area(pages * kPage);
	ASSERT_TRUE(area);
	{
		auto reg = ctx->get(area.at(0), pages * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	Tally odd, even;
	std::size_t first_refusal = 0;
	for (std::size_t p = 1; p < pages; p += 2) {
		ASSERT_TRUE(remap_fresh(area.at(p * kPage), kPage));
		if (write_check(*ctx, area.at(p * kPage + 8), 64, odd, unsigned(p)) !=
			    Outcome::delivered &&
		    !first_refusal)
			first_refusal = p;
	}
	std::printf("  first refused replaced page: %zu of %zu (backings compacted so far: %llu)\n",
		    first_refusal, pages, (unsigned long long)ctx->stats().compactions);
	for (std::size_t p = 0; p < pages; p += 2)
		write_check(*ctx, area.at(p * kPage + 8), 64, even, unsigned(p));
	tell("fragmented: replaced pages", odd);
	tell("fragmented: untouched pages", even);
	const auto s = ctx->stats();
	std::printf("  compactions=%llu pinned_bytes=%llu stale_pinned_bytes=%llu invalid_bytes=%llu\n",
		    (unsigned long long)s.compactions, (unsigned long long)s.pinned_bytes,
		    (unsigned long long)s.stale_pinned_bytes, (unsigned long long)s.invalid_bytes);
	EXPECT_EQ(odd.lost + even.lost, 0u);
	EXPECT_EQ(odd.delivered, odd.lookups) << odd.line();
	EXPECT_EQ(even.delivered, even.lookups) << even.line();
}

} // namespace
} // namespace mrsync::test::adversary
