// The incremental device map end to end (issue 14): a context on the real
// uring HCA resyncs one page of a large registration, and the driver rewrites
// only what the core says changed (Driver::map_changed). The guard is that
// the core names every page it changed; the negative control runs the same
// steps with a decorator that hides the changed ranges from the HCA (as a
// core that forgot them would) and shows the DMA write to the remapped page
// is lost -- the device still translates it to the old, still pinned page.
#include <sys/mman.h>

#include <cstring>

#include "support/forwarding_driver.hpp"
#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

/* The real uring HCA; with `hide` its map_changed is told nothing changed.
 * Not a model: every call reaches the real driver. */
class ChangeHidingUring final : public ForwardingDriver {
public:
	ChangeHidingUring(std::unique_ptr<uring::Hca> inner, bool hide)
		: ForwardingDriver(std::unique_ptr<Driver>(inner.release())), hide_(hide)
	{
	}
	uring::Hca &hca() { return dynamic_cast<uring::Hca &>(inner()); }

	Result<Keys> map_changed(Keys keys, std::span<const Extent> t,
				 std::span<const Range> changed) override
	{
		return inner().map_changed(keys, t, hide_ ? std::span<const Range>() : changed);
	}

private:
	bool hide_;
};

template <bool Hide>
Result<std::unique_ptr<Driver>> create_hiding(const DriverConfig &)
{
	auto inner = uring::Hca::create();
	if (!inner)
		return std::move(inner).error();
	return std::unique_ptr<Driver>(new ChangeHidingUring(std::move(*inner), Hide));
}

const DriverFactory passing_factory{"uring-changes-passed", &uring::Hca::available,
				    create_hiding<false>};
const DriverFactory hiding_factory{"uring-changes-hidden", &uring::Hca::available,
				   create_hiding<true>};
MRSYNC_REGISTER_DRIVER(passing_factory)
MRSYNC_REGISTER_DRIVER(hiding_factory)

constexpr std::size_t kPages = 256;
constexpr std::size_t kChanged = 137;

/* Registers 1 MiB, replaces one page inside it (the manual source is told),
 * looks the page up again (resync, re-pin) and DMA-writes through the key.
 * @return whether the application sees the write. */
bool write_after_resync_lands(const char *driver)
{
	std::string why;
	if (!uring::Hca::available(why))
		return ADD_FAILURE() << why, false;
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = driver;
	p.sources = MRSYNC_SOURCE_MANUAL;
	auto ctx = Context::create(p);
	if (!ctx)
		return ADD_FAILURE() << ctx.error().message, false;
	Mapping buf(kPages * kPage);
	std::memset(buf.at(0), 0x5a, buf.size());
	{
		auto whole = ctx->get(buf.at(0), buf.size());
		if (!whole)
			return ADD_FAILURE() << whole.error().message, false;
	}
	std::byte *page = buf.at(kChanged * kPage);
	EXPECT_TRUE(remap_fresh(page, kPage));
	EXPECT_TRUE(ctx->notify_unmap(page, kPage).ok());
	auto reg = ctx->get(page, kPage);
	if (!reg)
		return ADD_FAILURE() << reg.error().message, false;
	EXPECT_EQ(ctx->stats().entries_repinned, 1u);
	uring::Hca &hca = dynamic_cast<ChangeHidingUring &>(ctx->driver()).hca();
	const auto data = pattern(kPage, 9);
	EXPECT_EQ(dma_write(hca, reg->lkey(), page, data), int(kPage)) << "the device reports success";
	/* An untouched page keeps working either way. */
	const auto other = pattern(kPage, 10);
	EXPECT_EQ(dma_write(hca, reg->lkey(), buf.at(3 * kPage), other), int(kPage));
	EXPECT_TRUE(sees(buf.at(3 * kPage), other));
	return sees(page, data);
}

TEST(MapChanged, OnePageResyncOfALargeRegistrationLands)
{
	EXPECT_TRUE(write_after_resync_lands("uring-changes-passed"));
}

TEST(MapChanged, NegativeControlHiddenChangesLoseTheWrite)
{
	EXPECT_FALSE(write_after_resync_lands("uring-changes-hidden"))
		<< "with the changed ranges hidden the HCA keeps the stale slot: the write must be lost";
}

} // namespace
} // namespace mrsync::test
