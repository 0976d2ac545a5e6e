// SPDX-License-Identifier: MIT
// mrsync_watcher_fd() with the DPDK source (EAL --in-memory on real
// hugepages): a thread asleep in poll() on the fd is woken when another
// thread rte_free()s subscribed EAL memory -- the source signals from DPDK's
// memory-event callback, under the hotplug lock, before the EAL unmaps --
// and the poll that follows delivers a part of it. Negative control: the
// same rte_free() under a watcher with only the manual source, which DPDK
// does not tell: nothing wakes the sleeper, nothing is delivered.
#include <gtest/gtest.h>
#include <mrsync/subscribe.h>

#include <poll.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "dpdk/eal_fixture.hpp"

namespace mrsync::test {
namespace {

constexpr std::size_t kLen = 8u << 20;

struct Seen {
	std::vector<mrsync_change> changes;
	static void record(void *arg, const mrsync_change *c)
	{
		static_cast<Seen *>(arg)->changes.push_back(*c);
	}
};

/* rte_free() of a subscribed buffer on another thread while this one sleeps
 * in poll() on the watcher's fd. @return whether POLLIN came within
 * `timeout_ms`, and what the poll after it delivered. */
bool free_wakes(std::uint32_t sources, int timeout_ms, Seen &seen, int &calls)
{
	Attached a(MRSYNC_SOURCE_MANUAL);
	EXPECT_TRUE(a);
	mrsync_watcher *w = nullptr;
	EXPECT_EQ(mrsync_watcher_create(sources, &w), 0) << mrsync_last_error();
	int fd = -1;
	EXPECT_EQ(mrsync_watcher_fd(w, &fd), 0) << mrsync_last_error();
	EalBuffer buf(kLen);
	EXPECT_TRUE(buf.p);
	EXPECT_EQ(mrsync_subscribe(w, buf.p, kLen, Seen::record, &seen, nullptr), 0)
		<< mrsync_last_error();
	EXPECT_GE(mrsync_watcher_poll(w), 0); /* the fd's first, spurious wake-up */
	std::atomic<bool> asleep{false};
	auto sleeper = std::async(std::launch::async, [&] {
		pollfd p{fd, POLLIN, 0};
		asleep = true;
		return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
	});
	while (!asleep)
		std::this_thread::yield();
	std::this_thread::sleep_for(std::chrono::milliseconds(50));
	std::thread([&] { buf.reset(); }).join();
	const bool woke = sleeper.get();
	calls = mrsync_watcher_poll(w);
	mrsync_watcher_destroy(&w);
	return woke;
}

TEST(DpdkWatcherFd, RteFreeOnAnotherThreadWakesThePoller)
{
	Seen seen;
	int calls = -1;
	const auto t0 = std::chrono::steady_clock::now();
	ASSERT_TRUE(free_wakes(MRSYNC_SOURCE_DPDK, 5000, seen, calls))
		<< "no POLLIN within 5 s of rte_free()";
	const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
				std::chrono::steady_clock::now() - t0)
				.count();
	EXPECT_GE(calls, 1);
	ASSERT_FALSE(seen.changes.empty()) << "woken, but the poll delivered nothing";
	std::printf("[ dpdk     ] woken and delivered %zu change(s) in %ld us (50 ms of it "
		    "the sleeper's head start)\n",
		    seen.changes.size(), long(us));
}

TEST(DpdkWatcherFd, NegativeControlWithoutTheDpdkSourceNothingWakes)
{
	Seen seen;
	int calls = -1;
	EXPECT_FALSE(free_wakes(MRSYNC_SOURCE_MANUAL, 1000, seen, calls))
		<< "woken although no source of the watcher hears DPDK";
	EXPECT_EQ(calls, 0);
	EXPECT_TRUE(seen.changes.empty());
}

} // namespace
} // namespace mrsync::test
