// The cache and a subscriber on the SAME memory, one set of sources
// (mrsync_ctx_watcher(), lib/core/source_hub.hpp), userfaultfd as the source
// (--source=kmod: the kernel module, in the QEMU guest): both watch it (with
// userfaultfd a watcher of its own gets EBUSY there: one userfaultfd per
// mapping), and a raw munmap + mmap reaches both, whichever drains it first.
// Every round DMAs through the uring HCA into the remapped page and checks
// the bytes. The negative control is MRSYNC_CTX_F_TEST_NO_FANOUT: a drain
// keeps what it took for its own client, and the same rounds then lose the
// write (the subscriber drained first) or the callback (the cache did).
#include "support/soft_hca.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <cstdio>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <sys/syscall.h>

#include <mrsync/subscribe.h>
#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_NO_FANOUT */

namespace mrsync::test {
namespace {

std::uint32_t source = MRSYNC_SOURCE_UFFD; /* main(): --source=kmod */
constexpr std::size_t kPages = 8;
constexpr int kRounds = 24;

struct Seen {
	std::vector<mrsync_change> changes;
	static void record(void *arg, const mrsync_change *c)
	{
		static_cast<Seen *>(arg)->changes.push_back(*c);
	}
	/* Whether a change delivered so far covers [va, va + len). */
	bool covers(const void *va, std::size_t len) const
	{
		const auto s = reinterpret_cast<std::uint64_t>(va);
		for (const auto &c : changes)
			if (c.start <= s && s + len <= c.end)
				return true;
		return false;
	}
};

/* munmap + mmap by raw system calls: nothing in libc that anyone could hook. */
void raw_remap(void *addr, std::size_t len)
{
	ASSERT_EQ(::syscall(SYS_munmap, addr, len), 0);
	ASSERT_EQ(reinterpret_cast<void *>(::syscall(SYS_mmap, addr, len, PROT_READ | PROT_WRITE,
						     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)),
		  addr);
}

mrsync_watcher *watcher_of(Context &ctx)
{
	mrsync_watcher *w = nullptr;
	EXPECT_EQ(mrsync_ctx_watcher(ctx.c_handle(), &w), 0) << mrsync_last_error();
	return w;
}

/* Looks `page` up in the cache and DMAs 64 bytes of pattern `seed` into it
 * through the uring HCA. @return whether the application sees them (a
 * failed lookup counts as a lost write; the reason goes to `why`). */
bool dma_lands(Context &ctx, std::byte *page, unsigned seed, std::string *why = nullptr)
{
	auto reg = ctx.get(page, 64);
	if (!reg.ok()) {
		if (why)
			*why = reg.error().message;
		return false;
	}
	const auto bytes = pattern(64, seed);
	return dma_write(hca_of(ctx), reg->lkey(), page, bytes) == 64 && sees(page, bytes);
}

/* Registers and subscribes all of `buf`; both must succeed on one source. */
void register_and_subscribe(Context &ctx, mrsync_watcher *w, const Mapping &buf, Seen &seen)
{
	auto reg = ctx.get(buf.at(0), buf.size());
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	ASSERT_EQ(mrsync_subscribe(w, buf.at(0), buf.size(), Seen::record, &seen, nullptr), 0)
		<< mrsync_last_error();
}

enum class Order { poll_first, lookup_first };

struct Outcome {
	int lost = 0;       /* DMA writes the application did not see */
	int undelivered = 0; /* remaps no callback reported */
};

/* kRounds of: raw remap of one page, then the subscriber's poll and the
 * cache's lookup + DMA in `order` (both, every round). */
Outcome run_rounds(std::uint32_t flags, Order order)
{
	Outcome out;
	Context ctx = make_context(source, flags);
	mrsync_watcher *w = watcher_of(ctx);
	Mapping buf(kPages * kPage);
	Seen seen;
	register_and_subscribe(ctx, w, buf, seen);
	for (int round = 0; round < kRounds; ++round) {
		std::byte *page = buf.at((round % kPages) * kPage);
		raw_remap(page, kPage);
		seen.changes.clear();
		const auto lookup = [&] {
			std::string why;
			out.lost += !dma_lands(ctx, page, unsigned(round), &why);
			EXPECT_EQ(why, "") << "round " << round;
		};
		if (order == Order::lookup_first)
			lookup();
		EXPECT_GE(mrsync_watcher_poll(w), 0) << mrsync_last_error();
		out.undelivered += !seen.covers(page, kPage);
		if (order == Order::poll_first)
			lookup();
	}
	return out;
}

TEST(SharedSources, CacheAndSubscriberWatchTheSameMemory)
{
	Context ctx = make_context(source);
	mrsync_watcher *w = watcher_of(ctx);
	ASSERT_NE(w, nullptr);
	Mapping buf(kPages * kPage);
	Seen seen;
	register_and_subscribe(ctx, w, buf, seen);
	// The limit this removes: a watcher with a userfaultfd of its own (the
	// module has no such limit: each file has its own notifiers).
	if (source == MRSYNC_SOURCE_UFFD) {
		mrsync_watcher *own = nullptr;
		ASSERT_EQ(mrsync_watcher_create(MRSYNC_SOURCE_UFFD, &own), 0) << mrsync_last_error();
		EXPECT_EQ(mrsync_subscribe(own, buf.at(0), buf.size(), Seen::record, &seen,
					   nullptr),
			  -EBUSY)
			<< "a second userfaultfd on the cache's memory is expected to be refused; "
			   "if it is not, this test no longer shows what the shared sources fix";
		mrsync_watcher_destroy(&own);
	}

	raw_remap(buf.at(2 * kPage), kPage);
	EXPECT_EQ(mrsync_watcher_poll(w), 1);
	ASSERT_EQ(seen.changes.size(), 1u);
	EXPECT_EQ(seen.changes[0].start, reinterpret_cast<std::uint64_t>(buf.at(2 * kPage)));
	EXPECT_EQ(seen.changes[0].end, reinterpret_cast<std::uint64_t>(buf.at(3 * kPage)));
	std::string why;
	EXPECT_TRUE(dma_lands(ctx, buf.at(2 * kPage), 7, &why))
		<< "the cache's translation is stale " << why;
	EXPECT_EQ(ctx.stats().entries_repinned, 1u) << "only the remapped page is re-pinned";
}

TEST(SharedSources, SubscriberPollsFirstTheCacheStillResyncs)
{
	const Outcome ok = run_rounds(0, Order::poll_first);
	EXPECT_EQ(ok.lost, 0);
	EXPECT_EQ(ok.undelivered, 0);
	std::printf("poll first: %d of %d writes lost, %d remaps undelivered\n", ok.lost, kRounds,
		    ok.undelivered);
	// Negative control: no copy left for the cache -> its next lookup hands
	// out the stale translation, and the write goes to the replaced page.
	const Outcome control = run_rounds(MRSYNC_CTX_F_TEST_NO_FANOUT, Order::poll_first);
	std::printf("poll first, fan-out off (negative control): %d of %d writes lost\n",
		    control.lost, kRounds);
	EXPECT_EQ(control.lost, kRounds) << "without the fan-out every write should be lost";
	EXPECT_EQ(control.undelivered, 0);
}

TEST(SharedSources, CacheResyncsFirstTheCallbackStillFires)
{
	const Outcome ok = run_rounds(0, Order::lookup_first);
	EXPECT_EQ(ok.lost, 0);
	EXPECT_EQ(ok.undelivered, 0);
	std::printf("lookup first: %d of %d writes lost, %d remaps undelivered\n", ok.lost,
		    kRounds, ok.undelivered);
	// Negative control: no copy left for the watcher -> no callback.
	const Outcome control = run_rounds(MRSYNC_CTX_F_TEST_NO_FANOUT, Order::lookup_first);
	std::printf("lookup first, fan-out off (negative control): %d of %d remaps undelivered\n",
		    control.undelivered, kRounds);
	EXPECT_EQ(control.undelivered, kRounds) << "without the fan-out no callback should fire";
	EXPECT_EQ(control.lost, 0);
}

/* The watcher's fd after the cache drained the change: the source's own fd
 * was cleared by that drain, the hub's hand-over keeps the fd readable. */
bool readable_after_cache_drained(std::uint32_t flags)
{
	Context ctx = make_context(source, flags);
	mrsync_watcher *w = watcher_of(ctx);
	Mapping buf(kPages * kPage);
	Seen seen;
	register_and_subscribe(ctx, w, buf, seen);
	int fd = -1;
	EXPECT_EQ(mrsync_watcher_fd(w, &fd), 0) << mrsync_last_error();
	EXPECT_GE(mrsync_watcher_poll(w), 0); /* the first, always-readable state */
	pollfd quiet{fd, POLLIN, 0};
	EXPECT_EQ(::poll(&quiet, 1, 0), 0) << "readable with nothing pending";
	raw_remap(buf.at(kPage), kPage);
	/* The monitor signals its eventfd right after it publishes: let it, so
	 * the cache's drain below is what clears it. */
	::usleep(200 * 1000);
	auto reg = ctx.get(buf.at(kPage), 64);
	EXPECT_TRUE(reg.ok()) << reg.error().message;
	pollfd pfd{fd, POLLIN, 0};
	const bool readable = ::poll(&pfd, 1, 200) == 1;
	seen.changes.clear();
	EXPECT_GE(mrsync_watcher_poll(w), 0);
	EXPECT_EQ(seen.covers(buf.at(kPage), kPage), !(flags & MRSYNC_CTX_F_TEST_NO_FANOUT));
	return readable;
}

TEST(SharedSources, WatcherFdStaysReadableWhenTheCacheDrainedFirst)
{
	EXPECT_TRUE(readable_after_cache_drained(0));
	EXPECT_FALSE(readable_after_cache_drained(MRSYNC_CTX_F_TEST_NO_FANOUT))
		<< "negative control: without the hand-over the cache's drain should leave "
		   "the fd quiet";
}

TEST(SharedSources, TheContextOwnsItsWatcher)
{
	Context ctx = make_context(source | MRSYNC_SOURCE_MANUAL);
	mrsync_watcher *w = watcher_of(ctx);
	mrsync_watcher *again = watcher_of(ctx);
	EXPECT_EQ(w, again) << "one watcher per context";
	mrsync_watcher_destroy(&again);
	EXPECT_EQ(again, nullptr);
	// Still alive: destroy only dropped the caller's pointer.
	Mapping buf(kPages * kPage);
	Seen seen;
	register_and_subscribe(ctx, w, buf, seen);
	// The context's manual source, through the watcher, reaches the cache too.
	EXPECT_EQ(mrsync_watcher_notify_unmap(w, buf.at(0), kPage), 0) << mrsync_last_error();
	EXPECT_EQ(mrsync_watcher_poll(w), 1);
	auto reg = ctx.get(buf.at(0), 64);
	ASSERT_TRUE(reg.ok()) << reg.error().message;
	EXPECT_GE(ctx.stats().entries_invalidated, 1u) << "the cache missed the report";

	mrsync_watcher *out = nullptr;
	EXPECT_EQ(mrsync_ctx_watcher(nullptr, &out), -EINVAL);
	EXPECT_NE(std::string(mrsync_last_error()).find("ctx"), std::string::npos);
	EXPECT_EQ(mrsync_ctx_watcher(ctx.c_handle(), nullptr), -EINVAL);
	EXPECT_NE(std::string(mrsync_last_error()).find("out"), std::string::npos);
}

/* A subscriber's thread polls without pause while the main thread remaps a
 * page, waits 2 ms (the poller drains the change meanwhile) and DMAs through
 * the cache. @return the writes lost out of `rounds` (stops at the first
 * with `stop_at_loss`); `delivered` counts the pages the poller got. */
int lost_under_a_polling_thread(std::uint32_t flags, int rounds, bool stop_at_loss,
				int &delivered)
{
	Context ctx = make_context(source, flags);
	mrsync_watcher *w = watcher_of(ctx);
	Mapping buf(kPages * kPage);
	struct Counted {
		std::atomic<int> n{0};
		/* Pages, not calls: adjacent pages changed before one poll
		 * arrive merged in one call. */
		static void record(void *arg, const mrsync_change *c)
		{
			static_cast<Counted *>(arg)->n.fetch_add(int((c->end - c->start) / kPage));
		}
	} counted;
	auto reg = ctx.get(buf.at(0), buf.size());
	EXPECT_TRUE(reg.ok()) << reg.error().message;
	reg->reset();
	EXPECT_EQ(mrsync_subscribe(w, buf.at(0), buf.size(), Counted::record, &counted, nullptr),
		  0)
		<< mrsync_last_error();
	std::atomic<bool> stop{false};
	std::thread poller([&] {
		while (!stop.load())
			if (mrsync_watcher_poll(w) == 0)
				std::this_thread::yield();
	});
	int lost = 0;
	for (int round = 0; round < rounds && !(stop_at_loss && lost); ++round) {
		std::byte *page = buf.at((round % kPages) * kPage);
		raw_remap(page, kPage);
		::usleep(2000);
		std::string why;
		lost += !dma_lands(ctx, page, unsigned(round), &why);
		EXPECT_EQ(why, "") << "round " << round;
	}
	stop.store(true);
	poller.join();
	EXPECT_GE(mrsync_watcher_poll(w), 0); /* a last change the poller had no time for */
	delivered = counted.n.load();
	return lost;
}

TEST(SharedSources, APollingThreadNeverTakesAChangeFromTheCache)
{
	constexpr int kConcurrentRounds = 200;
	int delivered = 0;
	const int lost = lost_under_a_polling_thread(0, kConcurrentRounds, false, delivered);
	std::printf("polling thread: %d of %d writes lost, %d changed pages delivered\n", lost,
		    kConcurrentRounds, delivered);
	EXPECT_EQ(lost, 0);
	EXPECT_GE(delivered, kConcurrentRounds) << "a remap never reached the subscriber";
	// Negative control: the poller's drains keep nothing for the cache.
	const int control =
		lost_under_a_polling_thread(MRSYNC_CTX_F_TEST_NO_FANOUT, kConcurrentRounds, true,
					    delivered);
	std::printf("polling thread, fan-out off (negative control): lost a write: %s\n",
		    control ? "yes" : "no");
	EXPECT_GT(control, 0) << "without the fan-out the cache should hand out a stale "
				 "translation";
}

/* In a fork child the parent's watcher is bound to the parent's sources:
 * mrsync_ctx_watcher() gives a new one on the child's, and a raw remap in
 * the child reaches it and the child's cache. @return the child's verdict:
 * 0, or the number of the check that failed. */
int in_a_fork_child(Context &ctx, mrsync_watcher *parents, const Mapping &buf)
{
	mrsync_watcher *w = nullptr;
	if (mrsync_ctx_watcher(ctx.c_handle(), &w) != 0 || !w)
		return 1;
	if (w == parents)
		return 2;
	Seen seen;
	if (mrsync_subscribe(w, buf.at(0), buf.size(), Seen::record, &seen, nullptr) != 0)
		return 3;
	if (::syscall(SYS_munmap, buf.at(kPage), kPage) != 0 ||
	    ::mmap(buf.at(kPage), kPage, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != buf.at(kPage))
		return 4;
	/* The control: the parent's watcher (bound to the parent's abandoned
	 * sources) delivers nothing here. */
	if (mrsync_watcher_poll(parents) != 0)
		return 8;
	if (mrsync_watcher_poll(w) != 1 || !seen.covers(buf.at(kPage), kPage))
		return 5;
	return dma_lands(ctx, buf.at(kPage), 9) ? 0 : 6;
}

TEST(SharedSources, AForkChildGetsAWatcherOnItsOwnSources)
{
	Context ctx = make_context(source);
	mrsync_watcher *w = watcher_of(ctx);
	Mapping buf(kPages * kPage);
	Seen seen;
	register_and_subscribe(ctx, w, buf, seen);
	const pid_t child = ::fork();
	ASSERT_GE(child, 0);
	if (child == 0)
		::_exit(in_a_fork_child(ctx, w, buf));
	int status = 0;
	ASSERT_EQ(::waitpid(child, &status, 0), child);
	ASSERT_TRUE(WIFEXITED(status));
	EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's check that failed";
	// The parent's watcher is untouched by the child.
	raw_remap(buf.at(3 * kPage), kPage);
	EXPECT_EQ(mrsync_watcher_poll(w), 1);
}

/* What the watcher's next poll delivers after the cache drained `reports`
 * page reports, every `stride` pages, from the manual source (the hub keeps
 * them for the watcher). */
std::vector<mrsync_change> kept_for_the_watcher(std::size_t reports, std::size_t stride)
{
	Context ctx = make_context(MRSYNC_SOURCE_MANUAL, 0, 16384);
	mrsync_watcher *w = watcher_of(ctx);
	Mapping buf(reports * stride * kPage);
	Seen seen;
	EXPECT_EQ(mrsync_subscribe(w, buf.at(0), buf.size(), Seen::record, &seen, nullptr), 0)
		<< mrsync_last_error();
	for (std::size_t i = 0; i < reports; ++i)
		EXPECT_EQ(mrsync_notify_unmap(ctx.c_handle(), buf.at(i * stride * kPage), kPage), 0);
	EXPECT_EQ(mrsync_resync(ctx.c_handle()), 0) << mrsync_last_error();
	EXPECT_GE(mrsync_watcher_poll(w), 1);
	return seen.changes;
}

TEST(SharedSources, WhatIsKeptForAClientIsBounded)
{
	// 5000 adjacent pages merge into one range: kept exactly.
	const auto merged = kept_for_the_watcher(5000, 1);
	ASSERT_EQ(merged.size(), 1u);
	EXPECT_EQ(merged[0].flags, 0u);
	EXPECT_EQ(merged[0].end - merged[0].start, 5000 * kPage);
	// 5000 separate pages do not fit in 4096: "everything changed".
	const auto lost = kept_for_the_watcher(5000, 2);
	ASSERT_EQ(lost.size(), 1u);
	EXPECT_EQ(lost[0].flags, unsigned(MRSYNC_CHANGE_F_OVERFLOW));
}

} // namespace
} // namespace mrsync::test

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	for (int i = 1; i < argc; ++i)
		if (!std::strcmp(argv[i], "--source=kmod"))
			mrsync::test::source = MRSYNC_SOURCE_KMOD;
	return RUN_ALL_TESTS();
}
