// fork(): the child inherits the context but not the parent's device objects;
// both keep working and neither sees the other's data.
#include <sys/wait.h>
#include <unistd.h>

#include "support/soft_hca.hpp"

namespace mrsync::test {
namespace {

/* Child-side checks: no gtest in the child, an exit code per failure. */
int child_body(Context &ctx, Mapping &buf)
{
	auto reg = ctx.get(buf.at(0), 64);
	if (!reg)
		return 10;
	const auto mine = pattern(64, 77);
	if (dma_write(hca_of(ctx), reg->lkey(), buf.at(0), mine) != 64)
		return 11;
	if (!sees(buf.at(0), mine))
		return 12; /* the write went to the parent's page */
	reg->reset();
	if (!remap_fresh(buf.at(kPage), kPage))
		return 13;
	auto again = ctx.get(buf.at(kPage), 64);
	if (!again)
		return 14;
	const auto fresh = pattern(64, 78);
	if (dma_write(hca_of(ctx), again->lkey(), buf.at(kPage), fresh) != 64 ||
	    !sees(buf.at(kPage), fresh))
		return 15;
	return 0;
}

TEST(Fork, ChildAndParentKeepWorkingWithoutStaleData)
{
	Context ctx = make_context(MRSYNC_SOURCE_UFFD);
	Mapping buf(4 * kPage);
	ASSERT_TRUE(ctx.hint(buf.at(0), 4 * kPage).ok());
	{
		auto reg = ctx.get(buf.at(0), 64);
		ASSERT_TRUE(reg.ok());
		ASSERT_EQ(dma_write(hca_of(ctx), reg->lkey(), buf.at(0), pattern(64, 1)), 64);
	}
	const pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(child_body(ctx, buf));
	int status = 0;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0) << "child check " << WEXITSTATUS(status) << " failed";

	/* The parent never sees the child's writes, and its own still land. */
	EXPECT_TRUE(sees(buf.at(0), pattern(64, 1)));
	auto reg = ctx.get(buf.at(0), 64);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	const auto later = pattern(64, 2);
	EXPECT_EQ(dma_write(hca_of(ctx), reg->lkey(), buf.at(0), later), 64);
	EXPECT_TRUE(sees(buf.at(0), later));
	ASSERT_TRUE(remap_fresh(buf.at(2 * kPage), kPage));
	auto moved = ctx.get(buf.at(2 * kPage), 64);
	ASSERT_TRUE(moved.ok());
	EXPECT_EQ(dma_write(hca_of(ctx), moved->lkey(), buf.at(2 * kPage), later), 64);
	EXPECT_TRUE(sees(buf.at(2 * kPage), later));
}

} // namespace
} // namespace mrsync::test
