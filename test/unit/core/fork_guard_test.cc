// The fork registry: every component's handlers run in the documented order
// (fork_guard.hpp) -- prepare in phase order, parent and child in reverse,
// and within a phase prepare in registration order, the others reversed.
#include "fork_guard.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <string>

#include <gtest/gtest.h>

using mrsync::detail::fork_register;
using mrsync::detail::ForkPhase;

namespace {

/* What the handlers saw, one letter each; no allocation (the child). */
struct Trace {
	std::array<char, 32> text{};
	std::size_t size = 0;
	void add(char c) noexcept
	{
		if (size < text.size() - 1)
			text[size++] = c;
	}
	std::string str() const { return std::string(text.data(), size); }
};
Trace trace;

/* Sources registered first on purpose: the order must not follow
 * registration across phases. Upper case: sources; lower: contexts. */
void register_all()
{
	fork_register(ForkPhase::sources, {.prepare = [] () noexcept { trace.add('P'); },
					   .parent = [] () noexcept { trace.add('A'); },
					   .child = [] () noexcept { trace.add('C'); }});
	fork_register(ForkPhase::sources, {.prepare = [] () noexcept { trace.add('Q'); },
					   .parent = [] () noexcept { trace.add('B'); },
					   .child = [] () noexcept { trace.add('D'); }});
	fork_register(ForkPhase::contexts, {.prepare = [] () noexcept { trace.add('p'); },
					    .parent = [] () noexcept { trace.add('a'); },
					    .child = [] () noexcept { trace.add('c'); }});
}

TEST(ForkGuard, HandlersRunInTheDocumentedOrder)
{
	register_all();
	trace = {};
	const pid_t pid = ::fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* prepare: contexts, then sources in registration order; child:
		 * sources reversed, then contexts. */
		_exit(trace.str() == "pPQDCc" ? 0 : 1);
	}
	int status = 0;
	ASSERT_EQ(::waitpid(pid, &status, 0), pid);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0) << "the child saw the handlers out of order";
	EXPECT_EQ(trace.str(), "pPQBAa");
}

} // namespace
