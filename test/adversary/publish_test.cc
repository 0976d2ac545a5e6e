// A lookup that hits a page while another thread's slow path re-pins it.
//
// The owner replaces page P (mmap(MAP_FIXED)), then looks P up and DMAs into
// it: the change returned before the lookup, and only the owner touches P.
// Another thread looks the whole area up all the time; its slow path resyncs
// (P's entry invalid) and re-pins P. If the owner's lookup hits P between
// the moment the re-pin publishes P's page-table slot and the moment the
// device learns the new translation, the owner gets a registration whose
// translation of P the device does not have yet: its DMA is refused.
// Nothing is lost, but a lookup that succeeded must be usable.
//
// The area's registration is cut into ~1000 extents first, so that the
// device's map of the whole translation takes a while.
#include <atomic>
#include <thread>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

TEST(Publish, HitWhileAnotherThreadRepins)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kPagesN = 2048;
	Mapping area(kPagesN * kPage);
	ASSERT_TRUE(area);
	{
		auto reg = ctx->get(area.at(0), kPagesN * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	/* fragment the translation: every other page re-pinned on its own */
	for (std::size_t p = 1; p < kPagesN; p += 2)
		ASSERT_TRUE(remap_fresh(area.at(p * kPage), kPage));
	for (std::size_t p = 1; p < kPagesN; p += 2) {
		auto reg = ctx->get(area.at(p * kPage), 64);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	std::atomic<bool> stop{false};
	std::thread other([&] {
		while (!stop.load()) {
			mrsync_reg reg;
			if (mrsync_get(ctx->c_handle(), area.at(0), kPagesN * kPage,
				       MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
				mrsync_put(ctx->c_handle(), &reg);
		}
	});
	Tally t;
	for (std::uint64_t i = 0; i < iterations(3000); ++i) {
		std::byte *const p = area.at(((i * 2) % kPagesN) * kPage);
		ASSERT_TRUE(remap_fresh(p, kPage));
		/* land the lookup anywhere in the other thread's slow path */
		for (volatile unsigned spin = (i * 7919) % 60000; spin; spin = spin - 1) {
		}
		write_check(*ctx, p + 16, 256, t, unsigned(i));
	}
	stop = true;
	other.join();
	tell("owner's lookups while another thread re-pins", t);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.dma_refused, 0u) << "lookups that succeeded but whose DMA the device refused: "
				     << t.line();
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

} // namespace
} // namespace mrsync::test::adversary
