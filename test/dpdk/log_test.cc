// While attached, libmrsync_dpdk routes the core's log lines to rte_log
// (the lib.mrsync log type), and restores the sink it found at detach.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include <rte_log.h>

#include "eal_fixture.hpp"

namespace mrsync::test {
namespace {

/* rte_log's output into a string while it lives. */
class LogStream {
public:
	LogStream() : f_(open_memstream(&buf_, &len_)) { rte_openlog_stream(f_); }
	~LogStream()
	{
		rte_openlog_stream(nullptr);
		std::fclose(f_);
		std::free(buf_);
	}
	std::string text()
	{
		std::fflush(f_);
		return std::string(buf_, len_);
	}

private:
	char *buf_ = nullptr;
	std::size_t len_ = 0;
	std::FILE *f_;
};

void other_sink(int, const char *, const char *, void *) {}

TEST(DpdkLog, CoreLinesReachRteLogWhileAttached)
{
	int cookie = 0;
	mrsync_set_log_sink(other_sink, &cookie); /* what detach must restore */
	{
		LogStream log;
		Attached a(MRSYNC_SOURCE_UFFD);
		ASSERT_TRUE(a);
		mrsync_log_fn fn = nullptr;
		mrsync_get_log_sink(&fn, nullptr);
		ASSERT_NE(fn, nullptr);
		ASSERT_NE(fn, other_sink) << "attach did not install its sink";
		/* The installed sink maps levels onto rte_log's. */
		fn(MRSYNC_LOG_LEVEL_WARNING, "core", "probe: routed", nullptr);
		EXPECT_NE(log.text().find("MRSYNC: core: probe: routed"), std::string::npos)
			<< log.text();
		/* A real line of the core: the first context with automatic
		 * sources says once, without the module, that it uses
		 * userfaultfd (no other test of this binary makes one). */
		if (access("/dev/mrsync", F_OK) != 0) {
			mrsync_params p = MRSYNC_PARAMS_INIT;
			p.driver = "null";
			mrsync_ctx *ctx = nullptr;
			ASSERT_EQ(mrsync_ctx_create(&p, &ctx), 0) << mrsync_last_error();
			mrsync_ctx_destroy(&ctx);
			EXPECT_NE(log.text().find("MRSYNC: core: "), std::string::npos)
				<< log.text();
		}
	}
	mrsync_log_fn fn = nullptr;
	void *arg = nullptr;
	mrsync_get_log_sink(&fn, &arg);
	EXPECT_EQ(fn, other_sink) << "detach did not restore the previous sink";
	EXPECT_EQ(arg, &cookie);
	mrsync_set_log_sink(nullptr, nullptr);
}

} // namespace
} // namespace mrsync::test
