// Class C of issue 9: shared memory whose pages change without an unmap.
//   C1  fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) on a memfd
//   C2  ftruncate shrink, then grow back
//   C3  remap_file_pages on a MAP_SHARED memfd
//   C4  hole punching on a hugetlbfs memfd (MFD_HUGETLB), and HugePages_Free
//       must not leak (a missed punch leaves the old 2 MiB page pinned)
//   C5  SysV shm: shmdt, then shmat of another segment at the same address
// userfaultfd sends no event for any of them. Each round changes one unit of
// the memory and writes to it (and, for C1-C4, to an untouched unit too).
//
// Expected with userfaultfd: every lookup and hint of that memory is refused
// with -ENOTSUP and a message naming the mapping and the kernel module; 0
// lost. With the module: every write delivered. Negative controls
// (stale.hpp) must lose writes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <string>

#include "stale.hpp"

namespace mrsync::test::stale {
namespace {

enum class Change {
	punch_hole,
	truncate_grow,
	remap_file_pages,
	hugetlb_punch_hole,
	sysv_reattach,
};

constexpr std::size_t kWrite = 256;
constexpr std::size_t kUnits = 4; /* units of the memfd; unit 0 is never changed */
constexpr const char *kName = "mrsync-stale-c";

/* A memfd of `units` units mapped MAP_SHARED, every page touched. */
class SharedMemfd {
public:
	SharedMemfd(std::size_t unit, std::size_t units) : len_(unit * units)
	{
		fd_ = memfd_create(kName, MFD_CLOEXEC | (unit == kHugePage ? MFD_HUGETLB : 0));
		if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(len_)) != 0)
			return;
		void *p = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
		if (p == MAP_FAILED)
			return;
		base_ = static_cast<std::byte *>(p);
		std::memset(base_, 0, len_);
	}
	~SharedMemfd()
	{
		if (base_)
			munmap(base_, len_);
		if (fd_ >= 0)
			close(fd_);
	}
	explicit operator bool() const { return base_ != nullptr; }
	int fd() const { return fd_; }
	std::byte *at(std::size_t off) const { return base_ + off; }

private:
	int fd_ = -1;
	std::size_t len_;
	std::byte *base_ = nullptr;
};

struct Tallies {
	Tally hint, changed, untouched;
	long leaked_hugepages = 0;
	std::uint64_t lost() const { return hint.lost + changed.lost + untouched.lost; }
};

class ClassC : public testing::TestWithParam<SubCase<Change>> {
protected:
	const std::uint64_t iterations = options().iterations ? options().iterations : 40;

	static std::size_t unit_of(Change how)
	{
		return how == Change::hugetlb_punch_hole ? kHugePage : unit();
	}

	void SetUp() override
	{
		if (auto why = reserve_hugepages(64); !why.empty())
			GTEST_FAIL() << why;
	}

	/* Changes unit i (1 .. kUnits-1 in turn) of a memfd, `iterations` times. */
	void run_memfd(Context &ctx, Change how, Tallies &t)
	{
		const std::size_t u = unit_of(how);
		SharedMemfd mem(u, kUnits);
		ASSERT_TRUE(mem) << "memfd: " << std::strerror(errno);
		checked_hint(ctx, mem.at(0), kUnits * u, t.hint);
		const long free_before = meminfo("HugePages_Free:");
		unsigned seed = 1;
		for (std::uint64_t k = 0; k < iterations; ++k) {
			const std::size_t i = 1 + k % (kUnits - 1), j = 1 + (i % (kUnits - 1));
			const auto off = static_cast<off_t>(i * u);
			if (u == kHugePage)
				make_room_for_hugepages(ctx);
			switch (how) {
			case Change::punch_hole:
			case Change::hugetlb_punch_hole:
				ASSERT_EQ(fallocate(mem.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						    off, static_cast<off_t>(u)), 0)
					<< std::strerror(errno);
				break;
			case Change::truncate_grow:
				ASSERT_EQ(ftruncate(mem.fd(), off), 0) << std::strerror(errno);
				ASSERT_EQ(ftruncate(mem.fd(), static_cast<off_t>(kUnits * u)), 0)
					<< std::strerror(errno);
				break;
			case Change::remap_file_pages: /* unit i now shows file unit j */
				ASSERT_EQ(remap_file_pages(mem.at(i * u), u, 0, j * u / kPage, 0), 0)
					<< std::strerror(errno);
				break;
			case Change::sysv_reattach:
				FAIL();
			}
			checked_write(ctx, mem.at(i * u), kWrite, t.changed, seed++);
			checked_write(ctx, mem.at(0), kWrite, t.untouched, seed++);
			if (how == Change::remap_file_pages) { /* and back, for the next round */
				ASSERT_EQ(remap_file_pages(mem.at(i * u), u, 0, i * u / kPage, 0), 0)
					<< std::strerror(errno);
			}
		}
		if (how == Change::hugetlb_punch_hole) {
			/* What the context still pins beyond the file's pages: resync,
			 * re-pin the current runs of backings holding replaced pages,
			 * wait for the kernel to let the unpinned ones go. */
			mrsync_resync(ctx.c_handle());
			mrsync_compact(ctx.c_handle());
			ASSERT_TRUE(hca_of(ctx).wait_releases());
			t.leaked_hugepages = free_before - meminfo("HugePages_Free:");
		}
	}

	/* Detaches the segment and attaches a new one at the same address. */
	void run_sysv(Context &ctx, Tallies &t)
	{
		const std::size_t u = unit();
		Mapping place(u, 0, u); /* an aligned address for the segments */
		ASSERT_TRUE(place);
		std::byte *const at = place.at(0);
		ASSERT_EQ(attach_new_segment(at, u, true), at) << "shmat: " << std::strerror(errno);
		checked_hint(ctx, at, u, t.hint);
		unsigned seed = 1;
		for (std::uint64_t k = 0; k < iterations; ++k) {
			if (u == kHugePage)
				make_room_for_hugepages(ctx);
			ASSERT_EQ(shmdt(at), 0) << std::strerror(errno);
			ASSERT_EQ(attach_new_segment(at, u), at) << "shmat: " << std::strerror(errno);
			checked_write(ctx, at, kWrite, t.changed, seed++);
		}
	}

	void run(Change how, std::uint32_t flags, Tallies &t)
	{
		auto ctx = open_context(flags);
		ASSERT_TRUE(ctx) << "context with " << flag_name(flags) << ": "
				 << ctx.error().message;
		if (how == Change::sysv_reattach)
			run_sysv(*ctx, t);
		else
			run_memfd(*ctx, how, t);
	}

	void print(const std::string &sub, const Tallies &t, Change how)
	{
		report(sub + " hint", t.hint);
		report(sub + " changed unit", t.changed);
		if (how != Change::sysv_reattach)
			report(sub + " untouched unit", t.untouched);
		if (how == Change::hugetlb_punch_hole)
			std::printf("stale %s [%s]: leaked hugepages=%ld\n", sub.c_str(), source_name(),
				    t.leaked_hugepages);
	}

	void expect_after_fix(Change how, const std::string &sub)
	{
		Tallies t;
		run(how, 0, t);
		if (HasFatalFailure())
			return;
		print(sub, t, how);
		EXPECT_EQ(t.lost(), 0u) << "writes lost";
		/* <= 0: another process may free hugepages meanwhile. */
		EXPECT_LE(t.leaked_hugepages, 0) << "HugePages_Free did not come back";
		const std::uint64_t untouched = how == Change::sysv_reattach ? 0 : iterations;
		if (kmod()) {
			EXPECT_EQ(t.hint.delivered, 1u) << t.hint.line();
			EXPECT_EQ(t.changed.delivered, iterations)
				<< "the module sees this change: every write must land: "
				<< t.changed.line();
			EXPECT_EQ(t.untouched.delivered, untouched) << t.untouched.line();
			return;
		}
		EXPECT_EQ(t.hint.enotsup, 1u)
			<< "userfaultfd cannot see this memory change: the hint must be refused "
			   "with -ENOTSUP: "
			<< t.hint.line();
		EXPECT_EQ(t.changed.enotsup, iterations)
			<< "every lookup must be refused with -ENOTSUP: " << t.changed.line();
		EXPECT_EQ(t.untouched.enotsup, untouched)
			<< "every lookup must be refused with -ENOTSUP: " << t.untouched.line();
		const Tally &refused = t.hint.enotsup ? t.hint : t.changed;
		if (refused.enotsup)
			expect_refusal_names(refused, how == Change::sysv_reattach ? "SYSV" : kName);
	}

	void expect_losses(Change how, const std::string &sub)
	{
		const std::uint32_t flags = negative_control_flags('C');
		Tallies t;
		run(how, flags, t);
		if (HasFatalFailure())
			return;
		print(sub + " negative control", t, how);
		EXPECT_GT(t.lost(), 0u) << "with " << flag_name(flags)
					<< " no write was lost: this test cannot show the bug";
	}
};

TEST_P(ClassC, LosesNothing)
{
	expect_after_fix(GetParam().how, GetParam().label);
}

TEST_P(ClassC, NegativeControlLosesWrites)
{
	/* The kernel refuses to register a 4 KiB SysV segment with userfaultfd,
	 * so even without the guards nothing is cached there to go stale. */
	if (GetParam().how == Change::sysv_reattach && !kmod() && !options().hugepages)
		GTEST_SKIP() << "userfaultfd cannot register 4 KiB SysV shm (UFFDIO_REGISTER: "
				"EINVAL): no stale translation to show; --hugepages has one";
	expect_losses(GetParam().how, GetParam().label);
}

INSTANTIATE_TEST_SUITE_P(
	Stale, ClassC,
	testing::Values(SubCase<Change>{"C1_PunchHole", "C1 memfd punch hole", Change::punch_hole},
			SubCase<Change>{"C2_TruncateShrinkGrow", "C2 memfd ftruncate shrink+grow",
				Change::truncate_grow},
			SubCase<Change>{"C3_RemapFilePages", "C3 memfd remap_file_pages",
				Change::remap_file_pages},
			SubCase<Change>{"C4_HugetlbPunchHole", "C4 hugetlbfs memfd punch hole",
				Change::hugetlb_punch_hole},
			SubCase<Change>{"C5_SysvDetachAttach", "C5 SysV shmdt+shmat", Change::sysv_reattach}),
	kCaseName);

} // namespace
} // namespace mrsync::test::stale
