// The log sink (mrsync_set_log_sink) and MRSYNC_LOG, on real library lines:
// the first context with automatic sources on a machine without the kernel
// module warns once that it uses userfaultfd (and what that cannot see). Each case runs in a fresh
// process (a threadsafe death test re-executes this binary), since the level
// is read and that line said once per process. A child exits 0 when all its
// checks held, else it names the first that failed on stderr.
#include <sys/mman.h>
#include <unistd.h>

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <mrsync/mrsync.h>

namespace {

struct Line {
	int level;
	std::string component, message;
};

struct Captured {
	std::mutex mu;
	std::vector<Line> lines;

	std::size_t count(const std::string &component, const std::string &text)
	{
		std::lock_guard lock(mu);
		std::size_t n = 0;
		for (const Line &l : lines)
			n += l.component == component && l.message.find(text) != std::string::npos;
		return n;
	}
};

void capture(int level, const char *component, const char *message, void *arg)
{
	auto *c = static_cast<Captured *>(arg);
	std::lock_guard lock(c->mu);
	c->lines.push_back({level, component, message});
}

/* stderr into a memfd for the child's lifetime, to see what reached it. */
class StderrCapture {
public:
	StderrCapture() : fd_(memfd_create("stderr", 0)) { dup2(fd_, STDERR_FILENO); }
	std::string text() const
	{
		std::string out(1 << 16, '\0');
		const ssize_t n = pread(fd_, out.data(), out.size(), 0);
		out.resize(n > 0 ? std::size_t(n) : 0);
		return out;
	}

private:
	int fd_;
};

/* The library line: a context with automatic sources and no module. */
void create_auto_context()
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "null";
	mrsync_ctx *ctx = nullptr;
	if (mrsync_ctx_create(&p, &ctx) == 0)
		mrsync_ctx_destroy(&ctx);
}

/* Any text of the core's warning: its wording is the core's to change. */
const char kAnyText[] = "";

using ChildBody = std::function<std::string(Captured &sink, const StderrCapture &err)>;

/* Runs body in a fresh process with its stderr captured; body returns "" or
 * the check that failed, which the child prints on the real stderr. */
void expect_in_child(const ChildBody &body)
{
	EXPECT_EXIT(
		{
			const int real_stderr = dup(STDERR_FILENO);
			StderrCapture err;
			static Captured sink;
			const std::string failed = body(sink, err);
			if (!failed.empty())
				(void)!write(real_stderr, failed.data(), failed.size());
			_exit(failed.empty() ? 0 : 1);
		},
		::testing::ExitedWithCode(0), "");
}

class LogSink : public ::testing::Test {
protected:
	void SetUp() override
	{
		if (access("/dev/mrsync", F_OK) == 0)
			GTEST_SKIP() << "the module is loaded: automatic sources log nothing";
		GTEST_FLAG_SET(death_test_style, "threadsafe");
		unsetenv("MRSYNC_LOG");
	}
};

TEST_F(LogSink, ReceivesTheLibrarysLinesInsteadOfStderr)
{
	expect_in_child([](Captured &c, const StderrCapture &err) -> std::string {
		mrsync_set_log_sink(capture, &c);
		mrsync_log_fn fn = nullptr;
		void *arg = nullptr;
		mrsync_get_log_sink(&fn, &arg);
		create_auto_context();
		if (fn != capture || arg != &c)
			return "mrsync_get_log_sink did not return the sink";
		if (c.count("core", kAnyText) == 0)
			return "the sink did not get the core's line";
		if (c.lines[0].level != MRSYNC_LOG_LEVEL_WARNING)
			return "the line is not a warning";
		return err.text().empty() ? "" : "stderr got: " + err.text();
	});
}

TEST_F(LogSink, NullSinkRestoresStderr)
{
	expect_in_child([](Captured &c, const StderrCapture &err) -> std::string {
		mrsync_set_log_sink(capture, &c);
		mrsync_set_log_sink(nullptr, &c);
		mrsync_log_fn fn = capture;
		mrsync_get_log_sink(&fn, nullptr);
		create_auto_context();
		if (fn != nullptr)
			return "mrsync_get_log_sink still returns a sink";
		if (!c.lines.empty())
			return "the removed sink got a line";
		if (err.text().find("mrsync WARN core: ") == std::string::npos)
			return "stderr lacks the core's line: " + err.text();
		return "";
	});
}

TEST_F(LogSink, LevelFiltersBeforeTheSink)
{
	setenv("MRSYNC_LOG", "error", 1);
	expect_in_child([](Captured &c, const StderrCapture &) -> std::string {
		mrsync_set_log_sink(capture, &c);
		create_auto_context();
		return c.lines.empty() ? "" : "MRSYNC_LOG=error let a warning through: " +
						       c.lines[0].message;
	});
}

TEST_F(LogSink, UnknownLevelIsReportedOnceToTheSink)
{
	setenv("MRSYNC_LOG", "bogus", 1);
	expect_in_child([](Captured &c, const StderrCapture &err) -> std::string {
		mrsync_set_log_sink(capture, &c);
		mrsync_set_log_sink(capture, &c);
		create_auto_context();
		if (c.count("log", "MRSYNC_LOG=bogus is not a level: accepted are error, warning, "
				   "info, debug; using warning") != 1)
			return "the sink did not get the MRSYNC_LOG warning exactly once";
		if (c.count("core", kAnyText) == 0)
			return "the fallback level is not warning";
		return err.text().empty() ? "" : "stderr got: " + err.text();
	});
}

TEST_F(LogSink, UnknownLevelIsReportedOnStderrWithoutASink)
{
	setenv("MRSYNC_LOG", "verbose", 1);
	expect_in_child([](Captured &, const StderrCapture &err) -> std::string {
		create_auto_context();
		create_auto_context();
		const std::string text = err.text();
		const std::string want = "MRSYNC_LOG=verbose is not a level";
		const auto at = text.find(want);
		if (at == std::string::npos || text.find(want, at + 1) != std::string::npos)
			return "stderr does not name MRSYNC_LOG=verbose once: " + text;
		return "";
	});
}

} // namespace
