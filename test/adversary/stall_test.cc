// MADV_DONTNEED's window, held open on purpose: userfaultfd reports REMOVE
// before the zap, and the madvising thread zaps only when it runs again.
// With SCHED_FIFO spinners (root) the madvising thread A is kept off its CPU
// from the moment the monitor has read the event until the test lets it go,
// so what another thread B does meanwhile is deterministic, not a race.
//
// The documented gap (docs/design.md): B *looks up* the page A frees. Guard 2
// claims "hints, wide re-pins and compaction never pin P there": a hint skips
// the entries a registration left invalid. But a REMOVE event for memory no
// live registration covers leaves no invalid entry behind, while the zap is
// still pending. Cases, each: A = MADV_DONTNEED of page(s) P, stalled before
// the zap; B = what the case says; then A zaps and returns; after A's return
// (join) the test looks P up, DMAs and checks.
//
//   LookupOfSamePage   B looks P up: the documented gap (a control: it must
//                      lose, or the stall does not work)
//   HintSameRegion     B hints the registration that covers P: P is skipped
//                      (a control: nothing lost)
//   HintAfterEviction  P's registration is evicted (max_regions 1) after the
//                      event was drained, then B hints the range
//   HintMremapDest     P lies in memory mremap()ed away from a registration:
//                      still armed, no registration covers it; B hints it
//   HintHugepage       P is a 2 MiB hugepage of which one 4 KiB piece was
//                      registered (userfaultfd arms the whole hugepage); B
//                      hints the hugepage
//   NeighbourBigEntry  params.entry_size = 64 KiB: B would look up another
//                      page of P's 64 KiB entry (not P); userfaultfd refuses
//                      such entries at context creation
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <dirent.h>
#include <thread>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

using Clock = std::chrono::steady_clock;

bool pin_to(pid_t tid, int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(tid, sizeof set, &set) == 0;
}

/* Every thread of the process to `cpu` (the monitor included). */
void pin_all_to(int cpu)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	while (dirent *e = readdir(d))
		if (e->d_name[0] != '.')
			(void)pin_to(static_cast<pid_t>(std::atoi(e->d_name)), cpu);
	closedir(d);
}

void unpin_all()
{
	cpu_set_t set;
	CPU_ZERO(&set);
	for (int c = 0; c < CPU_SETSIZE && c < 2; ++c)
		CPU_SET(c, &set);
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return;
	while (dirent *e = readdir(d))
		if (e->d_name[0] != '.')
			(void)sched_setaffinity(static_cast<pid_t>(std::atoi(e->d_name)), sizeof set, &set);
	closedir(d);
}

pid_t gettid_() { return static_cast<pid_t>(syscall(SYS_gettid)); }

bool make_fifo()
{
	sched_param sp{};
	sp.sched_priority = 1;
	return pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
}

void sleep_until(Clock::time_point t)
{
	std::this_thread::sleep_until(t);
}

/* One stalled MADV_DONTNEED of [p, p + len) and what B does in its window.
 * @return whether A was still stalled when B had finished (the window held). */
template <class DuringWindow>
bool stalled_dontneed(Context &ctx, std::byte *p, std::size_t len, DuringWindow b_action,
		      std::string &why)
{
	if (std::thread::hardware_concurrency() < 2) {
		why = "needs 2 CPUs";
		return false;
	}
	pin_all_to(0); /* the monitor, the HCA's threads and us (B) on CPU 0 */
	std::atomic<bool> release{false}, a_returned{false};
	std::atomic<int> fifo_ok{0};
	const auto t0 = Clock::now() + std::chrono::milliseconds(20);
	const auto ta = t0 + std::chrono::milliseconds(2);
	const auto t1 = t0 + std::chrono::milliseconds(6);
	const auto t2 = t0 + std::chrono::milliseconds(12);
	std::thread s0([&] { /* keeps CPU 0 (the monitor) until t2 */
		pin_to(gettid_(), 0);
		fifo_ok += make_fifo();
		sleep_until(t0);
		while (Clock::now() < t2) {
		}
	});
	std::thread s1([&] { /* keeps CPU 1 (A) from t1 until released */
		pin_to(gettid_(), 1);
		fifo_ok += make_fifo();
		sleep_until(t1);
		const auto limit = Clock::now() + std::chrono::milliseconds(500);
		while (!release.load() && Clock::now() < limit) {
		}
	});
	std::thread a([&] {
		pin_to(gettid_(), 1);
		sleep_until(ta);
		madvise(p, len, MADV_DONTNEED); /* REMOVE queued; the monitor is held off */
		a_returned = true;
	});
	const std::uint64_t before = mrsync_generation(ctx.c_handle());
	sleep_until(t2);
	/* the monitor runs again, reads REMOVE; A is woken but S1 holds CPU 1 */
	const auto deadline = Clock::now() + std::chrono::milliseconds(200);
	while (mrsync_generation(ctx.c_handle()) == before && Clock::now() < deadline) {
	}
	const bool moved = mrsync_generation(ctx.c_handle()) != before;
	b_action();
	const bool held = moved && !a_returned.load();
	release = true;
	a.join();
	s1.join();
	s0.join();
	unpin_all();
	if (fifo_ok.load() != 2)
		why = "SCHED_FIFO refused (not root?)";
	else if (!moved)
		why = "the event was never read within 200 ms";
	else if (!held)
		why = "A zapped before B was done";
	return held && fifo_ok.load() == 2;
}

enum class Case { lookup_same_page, hint_same_region, hint_after_eviction, hint_mremap_dest,
		  hint_hugepage, neighbour_big_entry };
struct Param {
	const char *name;
	Case how;
	bool expect_loss; /* the documented gap: the control must lose */
};
void PrintTo(const Param &c, std::ostream *os) { *os << c.name; }

class Stalled : public testing::TestWithParam<Param> {};

TEST_P(Stalled, DontneedWindow)
{
	if (kmod())
		GTEST_SKIP() << "userfaultfd's window (the module waits for the zap: READ_BEGIN)";
	const Param c = GetParam();
	mrsync_params params = MRSYNC_PARAMS_INIT;
	if (c.how == Case::hint_after_eviction)
		params.max_regions = 1;
	if (c.how == Case::neighbour_big_entry)
		params.entry_size = 64 * 1024;
	Tally t;
	std::uint64_t held = 0, rounds = iterations(5);
	std::string why;
	if (c.how == Case::neighbour_big_entry) {
		/* userfaultfd cannot settle a pin: it refuses entries larger than
		 * a page, whose lookups would pin the page being zapped. */
		auto refused = open(params);
		ASSERT_FALSE(refused) << "a 64 KiB entry_size with userfaultfd was accepted";
		EXPECT_EQ(refused.error().code, EINVAL);
		EXPECT_NE(refused.error().message.find("entry_size"), std::string::npos)
			<< refused.error().message;
		return;
	}
	for (std::uint64_t i = 0; i < rounds; ++i) {
		/* a fresh context each round: no registration of an earlier
		 * round may cover this round's memory */
		auto ctx = open(params);
		ASSERT_TRUE(ctx) << ctx.error().message;
		const bool huge = c.how == Case::hint_hugepage;
		const std::size_t len = huge ? kHugePage : 16 * kPage;
		if (huge) {
			if (auto w = stale::reserve_hugepages(4); !w.empty())
				GTEST_SKIP() << w;
			stale::make_room_for_hugepages(*ctx, 4);
		}
		Mapping area(len, huge ? MAP_HUGETLB : 0, c.how == Case::neighbour_big_entry ? len : 0);
		ASSERT_TRUE(area);
		Mapping other(4 * kPage);
		std::byte *region = area.at(0);
		std::byte *p = area.at(huge ? 100 * kPage : 5 * kPage);
		std::size_t p_len = huge ? kHugePage : kPage;
		std::byte *p_zap = huge ? area.at(0) : p;
		void *moved = nullptr;
		switch (c.how) {
		case Case::hint_hugepage: { /* one 4 KiB piece registered */
			auto reg = ctx->get(area.at(3 * kPage), kPage);
			ASSERT_TRUE(reg) << reg.error().message;
			break;
		}
		case Case::hint_mremap_dest: {
			auto reg = ctx->get(region, len);
			ASSERT_TRUE(reg) << reg.error().message;
			reg->reset();
			void *res = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			moved = mremap(region, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, res);
			ASSERT_EQ(moved, res);
			ASSERT_TRUE(remap_fresh(region, len)); /* the old place, fresh */
			region = static_cast<std::byte *>(moved);
			p = region + 5 * kPage;
			p_zap = p;
			break;
		}
		default: {
			auto reg = ctx->get(region, len);
			ASSERT_TRUE(reg) << reg.error().message;
		}
		}
		std::memset(p_zap, 0x55, p_len);
		auto during = [&] {
			switch (c.how) {
			case Case::lookup_same_page:
			case Case::neighbour_big_entry: {
				std::byte *const q = c.how == Case::lookup_same_page ? p : area.at(2 * kPage);
				mrsync_reg reg;
				if (mrsync_get(ctx->c_handle(), q, 64, MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
					mrsync_put(ctx->c_handle(), &reg);
				break;
			}
			case Case::hint_after_eviction: {
				/* drains the event (P invalid), evicts P's registration */
				mrsync_reg reg;
				if (mrsync_get(ctx->c_handle(), other.at(0), kPage,
					       MRSYNC_ACCESS_LOCAL_WRITE, &reg) == 0)
					mrsync_put(ctx->c_handle(), &reg);
			}
				[[fallthrough]];
			default:
				(void)mrsync_hint(ctx->c_handle(), region, len, MRSYNC_ACCESS_ALL);
			}
		};
		if (stalled_dontneed(*ctx, p_zap, p_len, during, why))
			++held;
		/* A's madvise returned (joined): the application uses P */
		write_check(*ctx, p + 64, 256, t, static_cast<unsigned>(i));
		if (moved)
			munmap(moved, len);
	}
	tell(std::string("stalled DONTNEED, ") + c.name, t);
	std::printf("  window held in %llu of %llu rounds%s%s\n", (unsigned long long)held,
		    (unsigned long long)rounds, why.empty() ? "" : "; last miss: ", why.c_str());
	if (held == 0)
		GTEST_SKIP() << "the window could not be held: " << why;
	if (c.expect_loss) {
		EXPECT_GT(t.lost, 0u) << "control: the documented gap must lose when the window holds";
	} else {
		EXPECT_EQ(t.lost, 0u) << c.name << ": a hint pinned the page being zapped";
		EXPECT_EQ(t.delivered, t.lookups) << t.line();
	}
}

INSTANTIATE_TEST_SUITE_P(
	Adv, Stalled,
	testing::Values(Param{"LookupOfSamePage", Case::lookup_same_page, true},
			Param{"HintSameRegion", Case::hint_same_region, false},
			Param{"HintAfterEviction", Case::hint_after_eviction, false},
			Param{"HintMremapDest", Case::hint_mremap_dest, false},
			Param{"HintHugepage", Case::hint_hugepage, false},
			Param{"NeighbourBigEntry", Case::neighbour_big_entry, false}),
	[](const auto &info) { return std::string(info.param.name); });

} // namespace
} // namespace mrsync::test::adversary
