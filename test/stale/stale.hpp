// The classes of lost write of issue 9, reproduced against the C ABI: what
// every program of test/stale shares. A program changes registered memory the
// way an application does, then looks the memory up (mrsync_get), writes a
// pattern into it through the uring HCA (real pins, real DMA) and checks what
// the application sees. Each lookup ends in exactly one of:
//   delivered    the DMA completed and the application sees its bytes;
//   lost         the DMA completed and the application does NOT see them
//                (it went to a page the application can no longer see);
//   dma_refused  the device refused the DMA (an invalid entry): not lost, but
//                not a pass either;
//   enotsup      the lookup was refused with -ENOTSUP (the source cannot see
//                that memory);
//   efault       the lookup failed with -EFAULT (memory not mapped);
//   other        anything else (the first message is kept).
// A failed lookup is never counted as a pass.
#ifndef MRSYNC_TEST_STALE_HPP
#define MRSYNC_TEST_STALE_HPP

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>

#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */

#include "support/soft_hca.hpp"

namespace mrsync::test::stale {

/** Command-line options of every stale program (stale_main.cc). */
struct Options {
	std::uint32_t source = MRSYNC_SOURCE_UFFD; /**< --source=uffd|kmod */
	/** --hugepages: SysV segments and file memory on 2 MiB pages (the guest's
	 *  6.1 io_uring refuses 4 KiB SysV segments). */
	bool hugepages = false;
	std::uint64_t iterations = 0; /**< --iterations=N; 0 = the test's default */
	double seconds = 0;           /**< --seconds=S (class B); 0 = the default */
	bool stress = false;          /**< --stress: CPU-burning threads (class B) */
};
Options &options();

inline bool kmod()
{
	return options().source == MRSYNC_SOURCE_KMOD;
}
/** "uffd", "kmod", "uffd, hugepages"...: what a report line ran with. */
inline const char *source_name()
{
	if (options().hugepages)
		return kmod() ? "kmod, hugepages" : "uffd, hugepages";
	return kmod() ? "kmod" : "uffd";
}

/** How one checked lookup ended (see the top of this file). */
enum class Outcome { delivered, lost, dma_refused, enotsup, efault, other };

/** Outcomes counted separately, for one case. */
struct Tally {
	std::uint64_t lookups = 0, delivered = 0, lost = 0, dma_refused = 0;
	std::uint64_t enotsup = 0, efault = 0, other = 0;
	std::string first_enotsup, first_other, first_refusal;

	Outcome count(Outcome o, const char *message = "")
	{
		switch (o) {
		case Outcome::delivered: ++delivered; break;
		case Outcome::lost: ++lost; break;
		case Outcome::dma_refused:
			if (!dma_refused++)
				first_refusal = message;
			break;
		case Outcome::enotsup:
			if (!enotsup++)
				first_enotsup = message;
			break;
		case Outcome::efault: ++efault; break;
		case Outcome::other:
			if (!other++)
				first_other = message;
			break;
		}
		return o;
	}
	/** Counts a failed mrsync_get/mrsync_hint (rc < 0). */
	Outcome failed(int rc)
	{
		const char *message = mrsync_last_error();
		if (rc == -ENOTSUP)
			return count(Outcome::enotsup, message);
		if (rc == -EFAULT)
			return count(Outcome::efault, message);
		return count(Outcome::other, (std::string(std::strerror(-rc)) + ": " + message).c_str());
	}
	void add(const Tally &o)
	{
		lookups += o.lookups;
		delivered += o.delivered;
		lost += o.lost;
		if (!enotsup && o.enotsup)
			first_enotsup = o.first_enotsup;
		if (!other && o.other)
			first_other = o.first_other;
		if (!dma_refused && o.dma_refused)
			first_refusal = o.first_refusal;
		dma_refused += o.dma_refused;
		enotsup += o.enotsup;
		efault += o.efault;
		other += o.other;
	}
	/** "lookups=N delivered=N lost=N ..." */
	std::string line() const
	{
		char buf[256];
		std::snprintf(buf, sizeof buf,
			      "lookups=%llu delivered=%llu lost=%llu dma_refused=%llu enotsup=%llu "
			      "efault=%llu other=%llu",
			      (unsigned long long)lookups, (unsigned long long)delivered,
			      (unsigned long long)lost, (unsigned long long)dma_refused,
			      (unsigned long long)enotsup, (unsigned long long)efault,
			      (unsigned long long)other);
		std::string s = buf;
		if (!first_other.empty())
			s += "\n    first other error: " + first_other;
		if (!first_refusal.empty())
			s += "\n    first DMA refusal: " + first_refusal;
		if (!first_enotsup.empty())
			s += "\n    first -ENOTSUP: " + first_enotsup;
		return s;
	}
};

/** One case of a class: `how` says what the program does to the memory. */
template <class How>
struct SubCase {
	const char *name;  /**< in the test's name (Stale/ClassA.LosesNothing/<name>) */
	const char *label; /**< in its report */
	How how;
};
template <class How>
void PrintTo(const SubCase<How> &c, std::ostream *os)
{
	*os << c.label;
}
/** For INSTANTIATE_TEST_SUITE_P: names each test after its case. */
inline constexpr auto kCaseName = [](const auto &info) { return std::string(info.param.name); };

/** Prints "stale <what> [<source>]: <counts>" (the figures the issue asks
 *  for; a failing run shows them too) and records them in the gtest XML. */
inline void report(const std::string &what, const Tally &t)
{
	std::printf("stale %s [%s]: %s\n", what.c_str(), source_name(), t.line().c_str());
	std::fflush(stdout);
	testing::Test::RecordProperty(what + ".lost", std::to_string(t.lost));
	testing::Test::RecordProperty(what + ".enotsup", std::to_string(t.enotsup));
}

/** A context on the uring HCA with the source of --source and `flags`. */
inline Result<Context> open_context(std::uint32_t flags = 0)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.driver = "uring";
	params.sources = options().source;
	params.flags = flags;
	return Context::create(params);
}

/** The flag that removes the protection a class's tests check: with the
 *  module, which sees every change of classes A and C, only the generation
 *  check is left to remove; otherwise the new pin guards. */
inline std::uint32_t negative_control_flags(char cls)
{
	if (kmod() && cls != 'B')
		return MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK;
	return MRSYNC_CTX_F_TEST_UNGUARDED_PINS;
}
inline const char *flag_name(std::uint32_t flags)
{
	return flags == MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK ? "MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK"
	       : flags == MRSYNC_CTX_F_TEST_UNGUARDED_PINS    ? "MRSYNC_CTX_F_TEST_UNGUARDED_PINS"
							      : "no flag";
}

/**
 * The application's side of one DMA: it clears [va, va + len) (zero: the
 * pattern never is), looks the range up, has the HCA write a fresh pattern
 * there through the key, and checks that it sees the pattern.
 */
inline Outcome checked_write(Context &ctx, std::byte *va, std::size_t len, Tally &t,
			     unsigned seed)
{
	++t.lookups;
	std::memset(va, 0, len);
	mrsync_reg reg;
	if (int rc = mrsync_get(ctx.c_handle(), va, len, MRSYNC_ACCESS_LOCAL_WRITE, &reg); rc < 0)
		return t.failed(rc);
	const auto bytes = pattern(len, seed);
	const int done = dma_write(hca_of(ctx), reg.lkey, va, bytes);
	mrsync_put(ctx.c_handle(), &reg);
	if (done == static_cast<int>(len))
		return t.count(sees(va, bytes) ? Outcome::delivered : Outcome::lost);
	if (done == -EFAULT || done == -EINVAL)
		return t.count(Outcome::dma_refused,
			       done == -EFAULT ? "-EFAULT (no current backing)" : "-EINVAL (unknown key)");
	return t.count(Outcome::other, ("DMA write: " + std::to_string(done)).c_str());
}

/** mrsync_hint over [va, va + len), counted like a lookup when it fails. */
inline void checked_hint(Context &ctx, const void *va, std::size_t len, Tally &t)
{
	++t.lookups;
	if (int rc = mrsync_hint(ctx.c_handle(), va, len, MRSYNC_ACCESS_ALL); rc < 0)
		t.failed(rc);
	else
		t.count(Outcome::delivered); /* nothing to check but that it worked */
}

/** Checks the message of a refusal: it must name the mapping (a part of
 *  what /proc/self/maps calls it) and say it needs the mrsync kernel module.
 *  Case does not matter. */
inline void expect_refusal_names(const Tally &t, const std::string &mapping)
{
	auto lower = [](std::string s) {
		for (char &c : s)
			c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
		return s;
	};
	const std::string message = lower(t.first_enotsup);
	EXPECT_NE(message.find("kernel module"), std::string::npos)
		<< "the message must say this memory needs the mrsync kernel module: "
		<< t.first_enotsup;
	EXPECT_NE(message.find(lower(mapping)), std::string::npos)
		<< "the message must name the mapping (" << mapping << "): " << t.first_enotsup;
}

/** The unit of SysV and file memory: 2 MiB with --hugepages, else 4 KiB. */
inline std::size_t unit()
{
	return options().hugepages ? kHugePage : kPage;
}

/** A private SysV segment of `len` bytes (SHM_HUGETLB with --hugepages),
 *  attached at `at` (SHM_REMAP: over whatever is there when `remap`) and
 *  marked for removal, so it goes away at its last detach.
 *  @return the address, or nullptr with errno set. */
inline std::byte *attach_new_segment(std::byte *at, std::size_t len, bool remap = false)
{
	const int id = shmget(IPC_PRIVATE, len,
			      IPC_CREAT | 0600 | (options().hugepages ? SHM_HUGETLB : 0));
	if (id < 0)
		return nullptr;
	void *p = shmat(id, at, remap ? SHM_REMAP : 0);
	const int err = errno;
	shmctl(id, IPC_RMID, nullptr);
	errno = err;
	return p == reinterpret_cast<void *>(-1) ? nullptr : static_cast<std::byte *>(p);
}

/**
 * Makes sure `free_needed` 2 MiB hugepages are free, raising
 * /proc/sys/vm/nr_hugepages if need be (root; the guest starts with none).
 * The pool is put back as it was at exit.
 * @return "" or why not.
 */
inline std::string reserve_hugepages(long free_needed)
{
	static std::optional<long> original; /* restored by the atexit handler */
	const long free_now = meminfo("HugePages_Free:");
	if (free_now >= free_needed)
		return "";
	long total = 0;
	{
		std::ifstream in("/proc/sys/vm/nr_hugepages");
		if (!(in >> total))
			return "cannot read /proc/sys/vm/nr_hugepages";
	}
	if (!original) {
		original = total;
		std::atexit([] {
			std::ofstream("/proc/sys/vm/nr_hugepages") << *original << "\n";
		});
	}
	std::ofstream("/proc/sys/vm/nr_hugepages") << total + (free_needed - free_now) << "\n";
	const long free_after = meminfo("HugePages_Free:");
	if (free_after < free_needed)
		return "needs " + std::to_string(free_needed) + " free 2 MiB hugepages, " +
		       std::to_string(free_after) + " free after raising /proc/sys/vm/nr_hugepages "
		       "(not root, or memory too fragmented)";
	return "";
}

/**
 * Before taking a hugepage: if fewer than `wanted` are free, resync and wait
 * until the kernel has released what the context unpinned. Unpinned pages
 * leave the pool lazily (Debian 6.1's io_uring frees a released buffer up to
 * a second later), and a fault on hugetlb memory with an empty pool is a
 * SIGBUS, not an error the test could count.
 */
inline void make_room_for_hugepages(Context &ctx, long wanted = 4)
{
	if (meminfo("HugePages_Free:") >= wanted)
		return;
	mrsync_resync(ctx.c_handle());
	(void)hca_of(ctx).wait_releases();
}

} // namespace mrsync::test::stale

#endif
