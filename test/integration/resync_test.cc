// Resync on the real kernel: every kind of change under a registration is
// followed page by page, keys stay, untouched pages keep working. Run with
// the userfaultfd monitor and with the manual source (the application tells
// mrsync itself).
#include <sys/mman.h>

#include <thread>

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

class Resync : public ::testing::TestWithParam<std::uint32_t> {
protected:
	void SetUp() override { ctx_.emplace(make_context(GetParam())); }

	/* What an application using the manual source does after a change. */
	void changed(void *addr, std::size_t len)
	{
		if (GetParam() == MRSYNC_SOURCE_MANUAL) {
			ASSERT_TRUE(ctx_->notify_unmap(addr, len).ok());
		}
	}

	Registration get(const void *addr, std::size_t len)
	{
		auto reg = ctx_->get(addr, len);
		EXPECT_TRUE(reg.ok()) << reg.error().message;
		return reg ? std::move(reg).value() : Registration();
	}

	/* Writes through a fresh lookup and checks the application sees it. */
	void expect_write_lands(std::byte *va, unsigned seed)
	{
		Registration reg = get(va, 64);
		ASSERT_TRUE(reg);
		const auto bytes = pattern(64, seed);
		EXPECT_EQ(dma_write(hca_of(*ctx_), reg.lkey(), va, bytes), 64);
		EXPECT_TRUE(sees(va, bytes)) << "write lost at offset of seed " << seed;
	}

	Keys keys_of(const void *addr, std::size_t len)
	{
		Registration reg = get(addr, len);
		return {reg.lkey(), reg.rkey()};
	}

	std::optional<Context> ctx_;
};

TEST_P(Resync, MunmapThenMmapAtTheSameAddress)
{
	Mapping buf(8 * kPage);
	const Keys keys = keys_of(buf.at(0), 8 * kPage);
	ASSERT_EQ(munmap(buf.at(2 * kPage), kPage), 0);
	changed(buf.at(2 * kPage), kPage);
	ASSERT_TRUE(remap_fresh(buf.at(2 * kPage), kPage));
	expect_write_lands(buf.at(2 * kPage + 100), 1);
	EXPECT_EQ(keys_of(buf.at(0), 8 * kPage), keys);
}

TEST_P(Resync, MapFixedOverARegisteredPage)
{
	Mapping buf(8 * kPage);
	const Keys keys = keys_of(buf.at(0), 8 * kPage);
	ASSERT_TRUE(remap_fresh(buf.at(5 * kPage), kPage));
	changed(buf.at(5 * kPage), kPage);
	expect_write_lands(buf.at(5 * kPage), 2);
	expect_write_lands(buf.at(0), 3); /* an untouched page */
	EXPECT_EQ(keys_of(buf.at(0), 8 * kPage), keys);
	EXPECT_EQ(ctx_->stats().entries_repinned, 1u);
}

TEST_P(Resync, MadviseDontneed)
{
	Mapping buf(8 * kPage);
	const Keys keys = keys_of(buf.at(0), 8 * kPage);
	ASSERT_EQ(madvise(buf.at(kPage), 2 * kPage, MADV_DONTNEED), 0);
	changed(buf.at(kPage), 2 * kPage);
	expect_write_lands(buf.at(kPage + 8), 4);
	expect_write_lands(buf.at(2 * kPage + 8), 5);
	EXPECT_EQ(keys_of(buf.at(0), 8 * kPage), keys);
}

TEST_P(Resync, MremapAwayAndAFreshPageInItsPlace)
{
	Mapping buf(8 * kPage);
	const Keys keys = keys_of(buf.at(0), 8 * kPage);
	void *moved = mremap(buf.at(3 * kPage), kPage, kPage, MREMAP_MAYMOVE);
	ASSERT_NE(moved, MAP_FAILED);
	changed(buf.at(3 * kPage), kPage);
	ASSERT_TRUE(remap_fresh(buf.at(3 * kPage), kPage));
	expect_write_lands(buf.at(3 * kPage), 6);
	EXPECT_EQ(keys_of(buf.at(0), 8 * kPage), keys);
	munmap(moved, kPage);
}

TEST_P(Resync, PartialUnmapInvalidatesOnlyThosePagesAndTheDeviceRefusesThem)
{
	Mapping buf(8 * kPage);
	Registration whole = get(buf.at(0), 8 * kPage);
	const Keys keys{whole.lkey(), whole.rkey()};
	ASSERT_EQ(munmap(buf.at(6 * kPage), 2 * kPage), 0);
	changed(buf.at(6 * kPage), 2 * kPage);

	/* A lookup covering the hole fails and says why... */
	auto hole = ctx_->get(buf.at(6 * kPage), 16);
	ASSERT_FALSE(hole.ok());
	EXPECT_EQ(hole.error().code, EFAULT);
	EXPECT_NE(hole.error().message.find("not mapped"), std::string::npos);
	/* ...the rest still works with the same key... */
	expect_write_lands(buf.at(kPage), 7);
	EXPECT_EQ(keys_of(buf.at(0), 4 * kPage), keys);
	/* ...and DMA through the old key into the hole is refused, not lost. */
	EXPECT_EQ(dma_write(hca_of(*ctx_), keys.lkey, buf.at(6 * kPage), pattern(64, 8)), -EFAULT);
	EXPECT_GE(ctx_->stats().entries_invalidated, 2u);

	/* Mapped again: the next lookup re-pins it lazily. */
	ASSERT_TRUE(remap_fresh(buf.at(6 * kPage), 2 * kPage));
	expect_write_lands(buf.at(7 * kPage), 9);
	EXPECT_EQ(keys_of(buf.at(0), 8 * kPage), keys);
}

TEST_P(Resync, OneHugepageOfAHugepageRegistration)
{
	if (meminfo("HugePages_Free:") < 3)
		GTEST_SKIP() << "needs 3 free 2 MiB hugepages (scripts/install-deps reserves them)";
	Mapping buf(2 * kHugePage, MAP_HUGETLB);
	ASSERT_TRUE(buf);
	const Keys keys = keys_of(buf.at(0), 2 * kHugePage);
	const long free_before = meminfo("HugePages_Free:");
	ASSERT_TRUE(remap_fresh(buf.at(kHugePage), kHugePage, MAP_HUGETLB));
	changed(buf.at(kHugePage), kHugePage);
	expect_write_lands(buf.at(kHugePage + 12345), 10);
	expect_write_lands(buf.at(777), 11);
	EXPECT_EQ(keys_of(buf.at(0), 2 * kHugePage), keys);
	/* The new hugepage is pinned; the replaced one is still pinned by the
	 * backing that serves the first hugepage: stale, counted... */
	ASSERT_TRUE(hca_of(*ctx_).wait_releases().ok());
	EXPECT_EQ(ctx_->stats().stale_pinned_bytes, kHugePage);
	EXPECT_EQ(meminfo("HugePages_Free:"), free_before - 1);
	/* ...until compaction re-pins the current page and lets it go. */
	auto compacted = ctx_->compact();
	ASSERT_TRUE(compacted.ok());
	EXPECT_GE(*compacted, 1);
	ASSERT_TRUE(hca_of(*ctx_).wait_releases().ok());
	EXPECT_EQ(ctx_->stats().stale_pinned_bytes, 0u);
	EXPECT_EQ(meminfo("HugePages_Free:"), free_before);
	expect_write_lands(buf.at(100), 13);
	expect_write_lands(buf.at(kHugePage + 100), 14);
	EXPECT_EQ(keys_of(buf.at(0), 2 * kHugePage), keys);
}

TEST_P(Resync, InFlightDmaToUntouchedPagesCompletesDuringAResync)
{
	Mapping buf(16 * kPage);
	Registration reg = get(buf.at(0), 16 * kPage);
	auto &hca = hca_of(*ctx_);
	std::vector<std::vector<std::byte>> sent;
	std::vector<std::uint64_t> tags;
	for (unsigned i = 0; i < 64; ++i) { /* pages 0..7, left in flight */
		sent.push_back(pattern(512, 100 + i));
		tags.push_back(next_user_data());
		ASSERT_TRUE(hca.write(reg.lkey(), reinterpret_cast<std::uint64_t>(buf.at(i * 512)),
				      sent.back(), tags.back())
				    .ok());
	}
	ASSERT_TRUE(remap_fresh(buf.at(12 * kPage), kPage));
	changed(buf.at(12 * kPage), kPage);
	expect_write_lands(buf.at(12 * kPage), 12); /* resyncs while those fly */
	for (unsigned i = 0; i < 64; ++i) {
		auto done = hca.wait(tags[i]);
		ASSERT_TRUE(done.ok());
		EXPECT_EQ(done->result, 512);
		EXPECT_TRUE(sees(buf.at(i * 512), sent[i])) << "in-flight write " << i << " lost";
	}
}

TEST_P(Resync, RingOverflowResyncsEverythingAndLosesNothing)
{
	ctx_.emplace(make_context(GetParam(), 0, /*ring_entries=*/2));
	Mapping buf(32 * kPage);
	const Keys keys = keys_of(buf.at(0), 32 * kPage);
	for (unsigned i = 0; i < 32; i += 2) { /* 16 separate ranges into a ring of 2 */
		ASSERT_TRUE(remap_fresh(buf.at(i * kPage), kPage));
		changed(buf.at(i * kPage), kPage);
	}
	for (unsigned i = 0; i < 32; ++i)
		expect_write_lands(buf.at(i * kPage + 8), 20 + i);
	EXPECT_GE(ctx_->stats().full_resyncs, 1u);
	EXPECT_EQ(keys_of(buf.at(0), 32 * kPage), keys);
}

/* A coarse watch (userfaultfd's chunks, docs/design.md) reports changes next
 * to a registration; the resync must filter them against the registrations:
 * no entry invalidated, no re-pin, the same keys, and the next lookup of the
 * registration still lands its write. */
TEST_P(Resync, AChangeBesideARegistrationInvalidatesNothing)
{
	/* Inaccessible pages around it keep its mapping apart from any
	 * neighbour (a thread's stack, which the source never chunks). */
	Mapping fenced(18 * kPage);
	ASSERT_EQ(mprotect(fenced.at(0), kPage, PROT_NONE), 0);
	ASSERT_EQ(mprotect(fenced.at(17 * kPage), kPage, PROT_NONE), 0);
	std::byte *const buf = fenced.at(kPage);
	const Keys keys = keys_of(buf, 4 * kPage);
	const mrsync_stats before = ctx_->stats();
	ASSERT_EQ(munmap(buf + 12 * kPage, kPage), 0); /* beside, not inside */
	changed(buf + 12 * kPage, kPage);
	ASSERT_TRUE(ctx_->resync().ok());
	const mrsync_stats after = ctx_->stats();
	EXPECT_GT(after.events, before.events) << "the change beside was not reported at all";
	EXPECT_EQ(after.entries_invalidated, before.entries_invalidated);
	EXPECT_EQ(after.invalid_bytes, 0u);
	expect_write_lands(buf + 100, 7);
	EXPECT_EQ(ctx_->stats().entries_repinned, before.entries_repinned);
	EXPECT_EQ(keys_of(buf, 4 * kPage), keys);
}

std::string source_name(const ::testing::TestParamInfo<std::uint32_t> &info)
{
	return info.param == MRSYNC_SOURCE_UFFD ? "userfaultfd" : "manual";
}

INSTANTIATE_TEST_SUITE_P(Sources, Resync,
			 ::testing::Values(std::uint32_t(MRSYNC_SOURCE_UFFD),
					   std::uint32_t(MRSYNC_SOURCE_MANUAL)),
			 source_name);

} // namespace
} // namespace mrsync::test
