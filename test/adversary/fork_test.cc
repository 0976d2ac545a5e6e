// fork() after registration.
//
//  RebuildSwallowsConcurrentChange: a fork child's first lookup rebuilds every
//  registration (new sources, new pins). Another thread of the child replaces
//  a page of the first registration after it was re-pinned and before the
//  rebuild ends; after both are done, the child looks the page up.
//
//  CowBothSides: parent registers, forks; child and parent each write the
//  buffer with the CPU (COW) and then DMA into it; each must see its own DMA.
//
//  InvalidAtFork: a page whose entry is invalid at fork (DONTNEED + touch) is
//  COW-shared; the parent's next lookup must pin its own copy.
//
//  WordsHeldAcrossFork: a cache in front of mrsync_get() that holds the
//  generation words (libmrsync_dpdk's lcore cache) sees them move at the fork
//  and again when the child rebuilds, and the child's words, fetched again,
//  sum above everything the parent showed and move on the child's changes.
#include <sys/wait.h>

#include <mrsync/generation.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

struct ChildReport {
	std::uint64_t lookups = 0, delivered = 0, lost = 0, dma_refused = 0, other = 0;
	std::uint64_t changed_during_rebuild = 0; /* the change ended before the rebuilding get returned */
	bool refused_unwatched = false; /* a region left unwatched was refused, naming ENOSPC */
	char message[256] = {};
};

void fill(ChildReport &r, const Tally &t)
{
	r.lookups = t.lookups;
	r.delivered = t.delivered;
	r.lost = t.lost;
	r.dma_refused = t.dma_refused;
	r.other = t.other + t.enotsup + t.efault;
	std::snprintf(r.message, sizeof r.message, "%s", t.line().c_str());
}

/* Runs `child` in a fork child and returns what it reported. */
template <class F>
ChildReport in_child(F child)
{
	int fds[2];
	if (pipe(fds) != 0) {
		ADD_FAILURE() << "pipe";
		return {};
	}
	const pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		ChildReport r = child();
		(void)!write(fds[1], &r, sizeof r);
		_exit(0);
	}
	close(fds[1]);
	ChildReport r;
	ChildReport got;
	const ssize_t n = read(fds[0], &got, sizeof got);
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	if (n != sizeof got) {
		ADD_FAILURE() << "child died without a report (status " << status << ")";
		return r;
	}
	return got;
}

TEST(Fork, RebuildSwallowsConcurrentChange)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	/* Many registrations, so the child's rebuild takes a while; the page
	 * that changes is in the lowest one, which the rebuild pins first. */
	constexpr std::size_t kRegions = 192, kRegion = 256 * 1024;
	Mapping area(kRegions * kRegion);
	ASSERT_TRUE(area);
	for (std::size_t i = 0; i < kRegions; ++i) {
		auto reg = ctx->get(area.at(i * kRegion), kRegion);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	std::byte *const q = area.at(0);
	const std::uint64_t rounds = iterations(8);
	ChildReport sum;
	for (std::uint64_t round = 0; round < rounds; ++round) {
		ChildReport r = in_child([&] {
			ChildReport out;
			std::atomic<bool> rebuilt{false};
			std::atomic<bool> during{false};
			std::thread changer([&] {
				/* Wait until the child has pinned something (the
				 * rebuild of the lowest registration), then replace
				 * page q. */
				const auto deadline = std::chrono::steady_clock::now() +
						      std::chrono::seconds(5);
				while (vm_pin_kb() <= 0 && std::chrono::steady_clock::now() < deadline) {
				}
				remap_fresh(q, kPage);
				during = !rebuilt.load();
			});
			{ /* the child's first lookup: rebuilds every registration */
				mrsync_reg reg;
				if (mrsync_get(ctx->c_handle(), area.at((kRegions - 1) * kRegion), kPage,
					       MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
					mrsync_put(ctx->c_handle(), &reg);
				rebuilt = true;
			}
			changer.join();
			/* The change returned before this lookup (join). */
			Tally t;
			write_check(*ctx, q, 256, t, 7 + static_cast<unsigned>(round));
			fill(out, t);
			out.changed_during_rebuild = during;
			return out;
		});
		sum.lookups += r.lookups;
		sum.delivered += r.delivered;
		sum.lost += r.lost;
		sum.dma_refused += r.dma_refused;
		sum.other += r.other;
		sum.changed_during_rebuild += r.changed_during_rebuild;
		if (r.lost || r.other)
			std::printf("  round %llu: %s (change %s the rebuild)\n",
				    (unsigned long long)round, r.message,
				    r.changed_during_rebuild ? "during" : "after");
	}
	std::printf("adversary fork rebuild race [%s]: rounds=%llu change_during_rebuild=%llu "
		    "lookups=%llu delivered=%llu lost=%llu dma_refused=%llu other=%llu\n",
		    stale::source_name(), (unsigned long long)rounds,
		    (unsigned long long)sum.changed_during_rebuild, (unsigned long long)sum.lookups,
		    (unsigned long long)sum.delivered, (unsigned long long)sum.lost,
		    (unsigned long long)sum.dma_refused, (unsigned long long)sum.other);
	EXPECT_EQ(sum.lost, 0u) << "a fork child lost DMA writes to a page another of its threads "
				   "replaced during the rebuild";
	EXPECT_EQ(sum.delivered, sum.lookups);
}

TEST(Fork, CowBothSides)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kLen = 64 * kPage;
	Mapping area(kLen);
	ASSERT_TRUE(area);
	Tally parent;
	const std::uint64_t rounds = iterations(20);
	ChildReport children;
	for (std::uint64_t round = 0; round < rounds; ++round) {
		{
			auto reg = ctx->get(area.at(0), kLen);
			ASSERT_TRUE(reg) << reg.error().message;
		}
		ChildReport r = in_child([&] {
			Tally t;
			std::memset(area.at(0), 0x11, kLen); /* COW in the child */
			for (std::size_t p = 0; p < 64; p += 7)
				write_check(*ctx, area.at(p * kPage + 100), 300, t,
					    static_cast<unsigned>(round * 100 + p));
			ChildReport out;
			fill(out, t);
			return out;
		});
		children.lookups += r.lookups;
		children.delivered += r.delivered;
		children.lost += r.lost;
		children.other += r.other + r.dma_refused;
		std::memset(area.at(0), 0x22, kLen); /* the parent writes too */
		for (std::size_t p = 0; p < 64; p += 5)
			write_check(*ctx, area.at(p * kPage + 8), 500, parent,
				    static_cast<unsigned>(round * 1000 + p));
	}
	tell("fork COW parent", parent);
	std::printf("adversary fork COW children [%s]: lookups=%llu delivered=%llu lost=%llu "
		    "other=%llu\n",
		    stale::source_name(), (unsigned long long)children.lookups,
		    (unsigned long long)children.delivered, (unsigned long long)children.lost,
		    (unsigned long long)children.other);
	EXPECT_EQ(parent.lost, 0u);
	EXPECT_EQ(parent.delivered, parent.lookups) << parent.line();
	EXPECT_EQ(children.lost, 0u);
	EXPECT_EQ(children.delivered, children.lookups) << children.message;
}

TEST(Fork, InvalidAtFork)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kLen = 16 * kPage;
	Mapping area(kLen);
	ASSERT_TRUE(area);
	Tally parent;
	ChildReport children;
	for (std::uint64_t round = 0; round < iterations(20); ++round) {
		{
			auto reg = ctx->get(area.at(0), kLen);
			ASSERT_TRUE(reg) << reg.error().message;
		}
		/* page 3 changes and is touched again: its entry is invalid
		 * and its new page is COW-shared with the child */
		madvise(area.at(3 * kPage), kPage, MADV_DONTNEED);
		std::memset(area.at(3 * kPage), 0x5a, kPage);
		ChildReport r = in_child([&] {
			Tally t;
			std::memset(area.at(3 * kPage), 0x33, kPage);
			write_check(*ctx, area.at(3 * kPage), 256, t, 99);
			ChildReport out;
			fill(out, t);
			return out;
		});
		children.lookups += r.lookups;
		children.delivered += r.delivered;
		children.lost += r.lost;
		if (r.delivered != r.lookups && !children.message[0])
			std::snprintf(children.message, sizeof children.message, "round %llu: %s",
				      static_cast<unsigned long long>(round), r.message);
		write_check(*ctx, area.at(3 * kPage + 64), 256, parent, static_cast<unsigned>(round));
		std::memset(area.at(3 * kPage), 0x44, kPage); /* the parent keeps writing */
		write_check(*ctx, area.at(3 * kPage + 1024), 256, parent,
			    static_cast<unsigned>(round + 500));
	}
	tell("fork invalid-at-fork parent", parent);
	EXPECT_EQ(parent.lost, 0u);
	EXPECT_EQ(parent.delivered, parent.lookups) << parent.line();
	EXPECT_EQ(children.lost, 0u);
	EXPECT_EQ(children.delivered, children.lookups) << children.message;
}

} // namespace
} // namespace mrsync::test::adversary

namespace mrsync::test::adversary {
namespace {

/* mrsync.h: "a sum of counters that only grow, so a value once seen never
 * comes back" -- which a cache in front of mrsync_get relies on. A fork
 * child's rebuild opens new sources whose counters start again. */
TEST(Fork, GenerationNeverGoesBack)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(4 * kPage);
	ASSERT_TRUE(area);
	Tally t;
	for (unsigned i = 0; i < 20; ++i) {
		write_check(*ctx, area.at(0), 4 * kPage, t, i);
		ASSERT_TRUE(remap_fresh(area.at(kPage), kPage));
	}
	write_check(*ctx, area.at(0), 4 * kPage, t, 99);
	const std::uint64_t before = mrsync_generation(ctx->c_handle());
	int fds[2];
	ASSERT_EQ(pipe(fds), 0);
	const pid_t pid = fork();
	if (pid == 0) {
		mrsync_reg reg;
		if (mrsync_get(ctx->c_handle(), area.at(0), kPage, MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
			mrsync_put(ctx->c_handle(), &reg);
		const std::uint64_t after = mrsync_generation(ctx->c_handle());
		(void)!write(fds[1], &after, sizeof after);
		_exit(0);
	}
	close(fds[1]);
	std::uint64_t after = 0;
	ASSERT_EQ(read(fds[0], &after, sizeof after), static_cast<ssize_t>(sizeof after));
	close(fds[0]);
	waitpid(pid, nullptr, 0);
	std::printf("adversary fork generation [%s]: parent %llu at fork, child %llu after its "
		    "first lookup\n",
		    stale::source_name(), (unsigned long long)before, (unsigned long long)after);
	EXPECT_GE(after, before) << "the generation went back in the fork child";
}

TEST(Fork, WordsHeldAcrossFork)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Mapping area(4 * kPage);
	ASSERT_TRUE(area);
	Tally t;
	write_check(*ctx, area.at(0), 4 * kPage, t, 1);
	ASSERT_TRUE(remap_fresh(area.at(kPage), kPage));
	write_check(*ctx, area.at(0), 4 * kPage, t, 2);
	const std::uint64_t *words[4];
	const int n = mrsync_generation_words(ctx->c_handle(), words, 4);
	ASSERT_GT(n, 1);
	const std::uint64_t seq = mrsync_gen_begin(words, std::uint32_t(n));
	struct Report {
		bool moved_at_fork, moved_at_rebuild, fetched_above, change_seen;
	};
	int fds[2];
	ASSERT_EQ(pipe(fds), 0);
	const pid_t pid = fork();
	if (pid == 0) {
		Report r{};
		r.moved_at_fork = mrsync_gen_retry(words, std::uint32_t(n), seq);
		const std::uint64_t at_fork = mrsync_gen_begin(words, std::uint32_t(n));
		mrsync_reg reg;
		if (mrsync_get(ctx->c_handle(), area.at(0), kPage, MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
			mrsync_put(ctx->c_handle(), &reg);
		r.moved_at_rebuild = mrsync_gen_retry(words, std::uint32_t(n), at_fork);
		const std::uint64_t *mine[4];
		const int m = mrsync_generation_words(ctx->c_handle(), mine, 4);
		const std::uint64_t fresh = mrsync_gen_begin(mine, std::uint32_t(std::max(m, 0)));
		r.fetched_above = m > 1 && fresh > seq && fresh > at_fork;
		/* The child's own sources report its changes (userfaultfd's
		 * monitor may take a moment to publish). */
		if (remap_fresh(area.at(2 * kPage), kPage))
			for (int i = 0; i < 1000 && !r.change_seen; ++i) {
				r.change_seen = mrsync_gen_retry(mine, std::uint32_t(m), fresh);
				if (!r.change_seen)
					std::this_thread::sleep_for(std::chrono::milliseconds(1));
			}
		(void)!write(fds[1], &r, sizeof r);
		_exit(0);
	}
	close(fds[1]);
	Report r{};
	ASSERT_EQ(read(fds[0], &r, sizeof r), static_cast<ssize_t>(sizeof r));
	close(fds[0]);
	waitpid(pid, nullptr, 0);
	EXPECT_TRUE(r.moved_at_fork) << "the parent's words did not move at the fork: a cache "
					"holding the parent's keys would keep them";
	EXPECT_TRUE(r.moved_at_rebuild) << "the old words did not move when the child switched "
					   "to its own sources' words";
	EXPECT_TRUE(r.fetched_above) << "the child's words sum to a value seen before";
	EXPECT_TRUE(r.change_seen) << "the child's words did not move on the child's change";
}

} // namespace
} // namespace mrsync::test::adversary

namespace mrsync::test::adversary {
namespace {

/* The module's per-file watch limit, a root-writable parameter. */
constexpr const char *kMaxWatches = "/sys/module/mrsync/parameters/max_watches";

std::string read_max_watches()
{
	std::ifstream f(kMaxWatches);
	std::string v;
	f >> v;
	return v;
}

bool write_max_watches(const std::string &v)
{
	std::ofstream f(kMaxWatches);
	f << v;
	f.flush();
	return static_cast<bool>(f);
}

/* A fork child whose rebuild cannot watch most regions (the module's limit
 * lowered under it, the way EINTR or ENOSPC leave them): those regions stay
 * invalid and a lookup says why; once watches can be made again, each lookup
 * watches before it pins, while a second thread keeps replacing other pages
 * of the same registration and the looking-up thread replaces the page it
 * then writes. Nothing may be lost. */
TEST(Fork, UnwatchedAfterTheRebuildIsWatchedBeforeItIsPinned)
{
	if (!kmod())
		GTEST_SKIP() << "the module's watch limit: kmod only";
	const std::string old = read_max_watches();
	ASSERT_FALSE(old.empty()) << "cannot read " << kMaxWatches;
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	constexpr std::size_t kRegions = 8, kRegion = 16 * kPage;
	Mapping area(kRegions * kRegion);
	ASSERT_TRUE(area);
	for (std::size_t i = 0; i < kRegions; ++i) {
		auto reg = ctx->get(area.at(i * kRegion), kRegion);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	ASSERT_TRUE(write_max_watches("2"));
	ChildReport r = in_child([&] {
		ChildReport out;
		Tally refused, t;
		/* The rebuild watches the two lowest regions, not the last. */
		write_check(*ctx, area.at(0), 64, t, 1);
		write_check(*ctx, area.at((kRegions - 1) * kRegion), 64, refused, 2);
		const bool named = refused.first_other.find("No space left") != std::string::npos;
		if (!write_max_watches(old)) {
			std::snprintf(out.message, sizeof out.message, "cannot restore max_watches");
			return out;
		}
		std::byte *const last = area.at((kRegions - 1) * kRegion);
		std::atomic<bool> stop{false};
		std::thread other([&] { /* odd pages of the last region */
			for (unsigned i = 0; !stop.load(); ++i)
				(void)change_fresh(last + (1 + 2 * (i % 8)) * kPage, i);
		});
		for (unsigned i = 0; i < iterations(400); ++i) {
			std::byte *const page = last + 2 * (i % 8) * kPage; /* even pages */
			(void)change_fresh(page, i);
			write_check(*ctx, page + 128, 256, t, i);
		}
		stop = true;
		other.join();
		fill(out, t);
		out.refused_unwatched = refused.delivered == 0 && named;
		if (!out.refused_unwatched)
			std::snprintf(out.message, sizeof out.message,
				      "the unwatched region was not refused with ENOSPC: %s",
				      refused.line().c_str());
		return out;
	});
	EXPECT_TRUE(write_max_watches(old));
	std::printf("adversary fork unwatched-after-rebuild [kmod]: lookups=%llu delivered=%llu "
		    "lost=%llu dma_refused=%llu other=%llu\n",
		    (unsigned long long)r.lookups, (unsigned long long)r.delivered,
		    (unsigned long long)r.lost, (unsigned long long)r.dma_refused,
		    (unsigned long long)r.other);
	EXPECT_TRUE(r.refused_unwatched) << r.message;
	EXPECT_EQ(r.lost, 0u) << r.message;
	EXPECT_EQ(r.delivered, r.lookups) << r.message;
	EXPECT_GT(r.delivered, 0u);
}

} // namespace
} // namespace mrsync::test::adversary
