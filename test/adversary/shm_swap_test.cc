// A page that flips between anonymous memory and a SysV segment through
// changes userfaultfd never reports -- shmdt() sends no event, nor does an
// mmap() into the hole it leaves -- while another thread hints the area.
// A hint arms what is mapped, looks at it, and pins it: if the segment it
// armed is detached and a fresh anonymous page fills the hole between the
// arming and the look, the look sees private anonymous memory that nobody
// watches. Pinned, that page is stale after its first change, for ever.
// Each round ends, with the hinter held, by an mmap(MAP_FIXED) over the
// page (reported only if its mapping is watched) and a checked write: a
// pin of an unwatched page is a lost write here.
#include <sys/shm.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "adversary.hpp"

namespace mrsync::test::adversary {
namespace {

class Segment {
public:
	Segment() : id_(shmget(IPC_PRIVATE, kPage, IPC_CREAT | 0600)) {}
	~Segment()
	{
		if (id_ >= 0)
			shmctl(id_, IPC_RMID, nullptr);
	}
	Segment(const Segment &) = delete;
	Segment &operator=(const Segment &) = delete;
	int id() const { return id_; }

private:
	int id_;
};

/* munmap + shmat over `page`, then shmdt + a fresh anonymous page. */
bool flip(std::byte *page, const Segment &segment)
{
	if (munmap(page, kPage) != 0 || shmat(segment.id(), page, 0) != page)
		return false;
	if (shmdt(page) != 0)
		return false;
	return mmap(page, kPage, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == page;
}

TEST(ShmSwap, HintsRacingShmdtNeverPinAnUnwatchedPage)
{
	auto ctx = open();
	ASSERT_TRUE(ctx) << ctx.error().message;
	Segment segment;
	ASSERT_GE(segment.id(), 0) << std::strerror(errno);
	constexpr std::size_t kPages = 4;
	Mapping area(kPages * kPage);
	ASSERT_TRUE(area);
	std::byte *const page = area.at(kPage);
	{
		auto reg = ctx->get(area.at(0), kPages * kPage);
		ASSERT_TRUE(reg) << reg.error().message;
	}
	std::mutex hold; /* the hinter hints only while it holds it */
	std::atomic<bool> stop{false};
	std::atomic<std::uint64_t> hints{0};
	std::thread hinter([&] {
		while (!stop.load()) {
			{
				std::lock_guard g(hold);
				(void)ctx->hint(area.at(0), kPages * kPage);
			}
			hints.fetch_add(1);
			std::this_thread::yield();
		}
	});
	Tally t;
	const double seconds = options().seconds > 0 ? options().seconds : 5;
	const auto deadline = std::chrono::steady_clock::now() +
			      std::chrono::milliseconds(std::int64_t(seconds * 1000));
	std::uint64_t rounds = 0, flips = 0;
	bool flipped = true;
	while (flipped && std::chrono::steady_clock::now() < deadline) {
		for (int i = 0; i < 64 && (flipped = flip(page, segment)); ++i)
			++flips;
		std::lock_guard g(hold);
		if (!remap_fresh(page, kPage))
			break;
		write_check(*ctx, page + 8, 64, t, unsigned(rounds++));
	}
	stop.store(true);
	hinter.join();
	ASSERT_TRUE(flipped) << "flip: " << std::strerror(errno);
	std::printf("  rounds=%llu flips=%llu hints=%llu\n", (unsigned long long)rounds,
		    (unsigned long long)flips, (unsigned long long)hints.load());
	tell("page flipping between anonymous memory and SysV shm, hinted", t);
	EXPECT_EQ(t.lost, 0u) << t.line();
	EXPECT_EQ(t.delivered, t.lookups) << t.line();
}

} // namespace
} // namespace mrsync::test::adversary
