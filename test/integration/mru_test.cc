// The inline hit path (mrsync/mru.h): a thread's kept entry must never hand
// out a registration that changed, was evicted or freed, or belongs to
// another context -- tried here against the real HCA, with the naive cache's
// loss as the negative control (generation checks off: the entry then
// serves the old page).
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include <mrsync/mru.h>

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

constexpr std::uint32_t kAccess = MRSYNC_ACCESS_ALL;

/* get_mru, a DMA write of a fresh pattern at va, put_mru: whether the
 * application sees the write. */
bool write_lands(Context &ctx, std::byte *va, unsigned seed)
{
	mrsync_reg reg;
	if (mrsync_get_mru(ctx.c_handle(), va, 64, kAccess, &reg) != 0) {
		ADD_FAILURE() << "mrsync_get_mru: " << mrsync_last_error();
		return false;
	}
	const auto bytes = pattern(64, seed);
	const bool written = dma_write(hca_of(ctx), reg.lkey, va, bytes) == 64;
	EXPECT_EQ(mrsync_put_mru(ctx.c_handle(), &reg), 0);
	return written && sees(va, bytes);
}

std::uint64_t hits(Context &ctx) { return ctx.stats().hits; }

/* Lookups of every other page from `first` on, on another thread (this
 * thread's entry is left as it is). */
void misses_elsewhere(Context &ctx, const Mapping &buf, std::size_t first)
{
	std::thread([&] {
		for (std::size_t p = first; p < 16; p += 2) {
			auto reg = ctx.get(buf.at(p * kPage), 64);
			ASSERT_TRUE(reg.ok()) << reg.error().message;
		}
	}).join();
}

/* A page replaced under the kept entry: with the generation checks on the
 * write lands in the new page; with them off (the naive cache) it is lost. */
bool replaced_page_write_lands(std::uint32_t flags)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD, flags);
	Mapping buf(4 * kPage);
	EXPECT_TRUE(write_lands(ctx, buf.at(kPage), 1)) << "the HCA does not work at all";
	const std::uint64_t before = hits(ctx);
	EXPECT_TRUE(write_lands(ctx, buf.at(kPage + 128), 2));
	EXPECT_EQ(hits(ctx), before + 1) << "the second lookup was not a hit";
	EXPECT_TRUE(remap_fresh(buf.at(kPage), kPage));
	return write_lands(ctx, buf.at(kPage + 256), 3);
}

TEST(Mru, AReplacedPageIsNeverServedFromTheEntry)
{
	EXPECT_TRUE(replaced_page_write_lands(0));
}

TEST(Mru, NegativeControlWithoutGenerationChecksTheEntryLosesTheWrite)
{
	EXPECT_FALSE(replaced_page_write_lands(MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK))
		<< "the naive cache did not lose the write: this test proves nothing";
}

/* A context that keeps at most 2 registrations live. */
Context capped_context()
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = MRSYNC_SOURCE_UFFD;
	params.max_regions = 2;
	return make_context(params);
}

/* The next lookup of va must not be served from the entry (a miss). */
void expect_missed_and_landed(Context &ctx, std::byte *va, const char *why)
{
	const mrsync_stats before = ctx.stats();
	EXPECT_TRUE(write_lands(ctx, va, 2));
	EXPECT_EQ(ctx.stats().misses, before.misses + 1) << why;
}

/* The kept registration is evicted and freed (a small max_regions, misses
 * on another thread); the entry must not hand it out again. */
TEST(Mru, AnEvictedRegistrationIsNeverServedFromTheEntry)
{
	Context ctx = capped_context();
	Mapping buf(16 * kPage);
	ASSERT_TRUE(write_lands(ctx, buf.at(0), 1)); /* fills the entry */
	misses_elsewhere(ctx, buf, 2); /* evict and free it; the entry still names it */
	ASSERT_GT(ctx.stats().evictions, 0u);
	expect_missed_and_landed(ctx, buf.at(0), "the evicted page was served as a hit");
}

/* A registration kept in the entry and still held is not freed under it:
 * the entry's hold counts (eviction skips it); releasing that same hold lets
 * the region go. */
TEST(Mru, HoldsTakenThroughTheEntryKeepTheRegistration)
{
	Context ctx = capped_context();
	Mapping buf(16 * kPage);
	ASSERT_TRUE(write_lands(ctx, buf.at(0), 1)); /* fills the entry */
	mrsync_reg held;
	ASSERT_EQ(mrsync_get_mru(ctx.c_handle(), buf.at(0), 64, kAccess, &held), 0);
	misses_elsewhere(ctx, buf, 2);
	/* Still held: its key still moves data into the page. */
	const auto bytes = pattern(64, 9);
	EXPECT_EQ(dma_write(hca_of(ctx), held.lkey, buf.at(0), bytes), 64);
	EXPECT_TRUE(sees(buf.at(0), bytes)) << "a held registration was freed";
	EXPECT_EQ(mrsync_put(ctx.c_handle(), &held), 0);
	misses_elsewhere(ctx, buf, 3); /* released: now it can go */
	EXPECT_LE(ctx.stats().regions, 2u);
	expect_missed_and_landed(ctx, buf.at(0), "a freed registration was served");
}

/* A context destroyed and a new one (often at the same address): the entry
 * names the old context's id and must not match the new one. */
TEST(Mru, ANewContextNeverUsesTheOldContextsEntry)
{
	Mapping buf(4 * kPage);
	{
		Context old_ctx = make_context(MRSYNC_SOURCE_UFFD);
		ASSERT_TRUE(write_lands(old_ctx, buf.at(0), 1));
		ASSERT_TRUE(write_lands(old_ctx, buf.at(64), 2));
	}
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	ASSERT_TRUE(write_lands(ctx, buf.at(128), 3));
	const mrsync_stats s = ctx.stats();
	EXPECT_EQ(s.misses, 1u) << "the first lookup on a new context must miss";
	EXPECT_EQ(s.hits, 0u);
}

/* Another thread's put of a registration this thread got through the entry,
 * and this thread's entry after another thread evicted things. */
TEST(Mru, PutsFromAnotherThreadBalance)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	Mapping buf(4 * kPage);
	ASSERT_TRUE(write_lands(ctx, buf.at(0), 1));
	mrsync_reg reg;
	ASSERT_EQ(mrsync_get_mru(ctx.c_handle(), buf.at(0), 64, kAccess, &reg), 0);
	int rc = -1;
	std::thread([&] { rc = mrsync_put_mru(ctx.c_handle(), &reg); }).join();
	EXPECT_EQ(rc, 0);
	/* Balanced: the entry still serves this thread while nothing changed. */
	EXPECT_TRUE(write_lands(ctx, buf.at(64), 2));
}

/* fork: the child's copy of the entry names the parent's context, whose
 * translations the child cannot use; the child's lookups go to the slow path
 * (which rebuilds) and land in the child's pages. */
TEST(Mru, AForkChildNeverUsesTheParentsEntry)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	Mapping buf(4 * kPage);
	ASSERT_TRUE(write_lands(ctx, buf.at(0), 1));
	ASSERT_TRUE(write_lands(ctx, buf.at(64), 2));
	const pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		const std::uint64_t before = ctx.stats().misses;
		if (!write_lands(ctx, buf.at(128), 3))
			_exit(1);
		_exit(ctx.stats().misses == before ? 2 : 0);
	}
	int status = 0;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the child's write was lost; 2: it was a hit";
	EXPECT_TRUE(write_lands(ctx, buf.at(192), 4)) << "the parent's entry broke";
}

} // namespace
} // namespace mrsync::test
