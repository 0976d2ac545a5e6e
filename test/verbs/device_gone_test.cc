// A device that disappears (`rdma link delete rxe0`) under a live cache.
// Soft-RoCE cannot disassociate user contexts: the kernel's unregister waits
// until every file of the device is closed. So the delete runs in the
// background, the cache keeps working or fails cleanly meanwhile, and the
// delete can only finish once the context is destroyed -- which is the check
// that the driver left nothing (no MR, no PD, no device file) behind.
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>

#include <mrsync/mrsync.hpp>

#include "pages.hpp"

extern char **environ;

namespace mrsync::test {
namespace {

pid_t spawn(std::vector<const char *> argv)
{
	argv.push_back(nullptr);
	pid_t pid = -1;
	if (posix_spawnp(&pid, argv[0], nullptr, nullptr, const_cast<char **>(argv.data()), environ))
		return -1;
	return pid;
}

/* The child's exit status, or -1 if it has not exited within `seconds`. */
int wait_exit(pid_t pid, int seconds)
{
	for (int i = 0; i < seconds * 10; ++i) {
		int status = 0;
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
	}
	return -1;
}

TEST(VerbsDeviceGone, LinkDeletedMidRunGivesErrorsNotCrashesAndNothingLeaks)
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "verbs"; /* its own device and PD: rxe0 */
	p.sources = MRSYNC_SOURCE_KMOD;
	auto created = Context::create(p);
	ASSERT_TRUE(created.ok()) << created.error().message;
	std::optional<Context> ctx(std::move(created).value());
	Pages buf(4);
	ASSERT_TRUE(ctx->get(buf.base, buf.len).ok());

	const pid_t del = spawn({"rdma", "link", "delete", "rxe0"});
	ASSERT_GT(del, 0);
	std::this_thread::sleep_for(std::chrono::seconds(1));
	/* The device is going: lookups must fail cleanly or still work. */
	for (int i = 0; i < 20; ++i) {
		buf.remap(i % 4);
		Pages other(2);
		auto again = ctx->get(buf.base, buf.len);
		auto fresh = ctx->get(other.base, other.len);
		if (!again.ok())
			std::fprintf(stderr, "while deleting: %s\n", again.error().message.c_str());
	}
	EXPECT_EQ(wait_exit(del, 0), -1) << "the delete finished while the cache held the device?";
	ctx.reset();
	EXPECT_EQ(wait_exit(del, 30), 0) << "rdma link delete still waits: something of the "
					    "device was not released";

	mrsync_ctx *gone = nullptr;
	EXPECT_EQ(mrsync_ctx_create(&p, &gone), -ENODEV);
	EXPECT_NE(std::string(mrsync_last_error()).find("no RDMA device"), std::string::npos)
		<< mrsync_last_error();

	const pid_t add = spawn({"rdma", "link", "add", "rxe0", "type", "rxe", "netdev", "veth0"});
	EXPECT_EQ(wait_exit(add, 30), 0) << "could not put rxe0 back";
}

} // namespace
} // namespace mrsync::test

int main(int argc, char **argv)
{
	if (access("/dev/infiniband/uverbs0", F_OK) != 0 || access("/dev/mrsync", F_OK) != 0) {
		if (std::getenv("MRSYNC_VM_GUEST"))
			return std::fprintf(stderr, "no RDMA device in the guest\n"), 1;
		std::fprintf(stderr, "%s: skipped: runs on Soft-RoCE in the QEMU guest\n", argv[0]);
		return 77;
	}
	::testing::InitGoogleTest(&argc, argv);
	return RUN_ALL_TESTS();
}
