/* SPDX-License-Identifier: MIT */
/*
 * MRSYNC_IOC_READ_BEGIN closes the window of issue 9: the module reports a
 * change when its invalidation starts, before madvise(MADV_DONTNEED) has
 * zapped the pages, and a long-term pin taken in between (io_uring buffer
 * registration, as an RDMA MR) keeps a page the kernel then drops: a DMA
 * write through it is lost.
 *
 * Each round, in lock step with a zapper thread:
 *   1. the test thread writes every page of a 16 MiB watched range (4 KiB
 *      pages: the zap of 4096 of them takes milliseconds under TCG);
 *   2. the zapper madvise(MADV_DONTNEED)s the whole range; the zap walks it
 *      upwards, so the last page goes last;
 *   3. the test thread spins until the generation moves (the invalidation
 *      has started), then (with READ_BEGIN) waits in the ioctl, pins the
 *      range's last page and checks that the generation did not move again
 *      (the protocol's retry half; nothing else changes the range);
 *   4. once madvise has returned, a DMA write (IORING_OP_READ_FIXED into the
 *      pinned buffer) puts a marker into the page, and the test reads it back
 *      through the mapping: if the pin took the old page, the mapping shows
 *      a fresh zero page instead and the write is lost.
 * With READ_BEGIN, mincore() right after the ioctl must also find the last
 * page unmapped: the zap is complete, not half done. mincore() just before
 * the ioctl tells whether the round raced at all (the page still mapped).
 *
 * The race is real, so the tests are statistical: the negative control (no
 * READ_BEGIN) must lose at least one write, and the READ_BEGIN test must
 * have started its wait at least once while the zap was still in progress
 * (the last page still resident just before the ioctl), or it proved
 * nothing. Both need two vCPUs (the guest has two); with one they skip.
 */
#include "vm_dev.hpp"

#include <gtest/gtest.h>
#include <liburing.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

using namespace mrsync_vm;

namespace {

constexpr std::size_t kPages = 4096;
constexpr std::size_t kMarkerBytes = 64;

/* A long-term pin of one page and a DMA engine that writes through it: an
 * io_uring whose fixed buffer 0 is the page (pin_user_pages FOLL_LONGTERM),
 * and READ_FIXED from a memfd (the wire) into it. */
class PinnedPage {
public:
	PinnedPage()
	{
		if (io_uring_queue_init(4, &ring_, 0) < 0)
			std::abort();
		if (io_uring_register_buffers_sparse(&ring_, 1) < 0)
			std::abort();
		wire_ = memfd_create("mrsync-vm-read-begin", MFD_CLOEXEC);
		if (wire_ < 0)
			std::abort();
	}
	~PinnedPage()
	{
		close(wire_);
		io_uring_queue_exit(&ring_);
	}
	PinnedPage(const PinnedPage &) = delete;
	PinnedPage &operator=(const PinnedPage &) = delete;

	/** Pins the page now mapped at `page` into slot 0; 0 or -errno. */
	int pin(void *page)
	{
		iovec iov{page, kPage};
		page_ = page;
		return update(&iov);
	}
	/** Empties slot 0; the kernel drops the pin once no request uses it. */
	int unpin()
	{
		iovec none{nullptr, 0};
		return update(&none);
	}
	/** The "NIC" writes `marker` to the start of the pinned page. */
	int dma_write(const char *marker)
	{
		if (pwrite(wire_, marker, kMarkerBytes, 0) != static_cast<ssize_t>(kMarkerBytes))
			return -errno;
		io_uring_sqe *sqe = io_uring_get_sqe(&ring_);
		io_uring_prep_read_fixed(sqe, wire_, page_, kMarkerBytes, 0, 0);
		int ret = io_uring_submit_and_wait(&ring_, 1);
		if (ret < 0)
			return ret;
		io_uring_cqe *cqe = nullptr;
		ret = io_uring_wait_cqe(&ring_, &cqe);
		if (ret < 0)
			return ret;
		ret = cqe->res < 0 ? cqe->res : 0;
		if (ret == 0 && cqe->res != static_cast<int>(kMarkerBytes))
			ret = -EIO; /* short read */
		io_uring_cqe_seen(&ring_, cqe);
		return ret;
	}

private:
	int update(iovec *iov)
	{
		int ret = io_uring_register_buffers_update_tag(&ring_, 0, iov, nullptr, 1);
		return ret == 1 ? 0 : (ret < 0 ? ret : -EIO);
	}

	io_uring ring_{};
	int wire_ = -1;
	void *page_ = nullptr;
};

/* madvise(MADV_DONTNEED)s the range once per round, when told to. */
class Zapper {
public:
	Zapper(char *base, std::size_t len)
		: base_(base), len_(len), thread_([this] { run(); })
	{
	}
	~Zapper()
	{
		stop_.store(true);
		go_.fetch_add(1);
		go_.notify_one();
		thread_.join();
	}

	void start(unsigned round)
	{
		go_.store(round);
		go_.notify_one();
	}
	/** Time spent in madvise so far (read after wait()). */
	double busy_ms() const
	{
		return std::chrono::duration<double, std::milli>(busy_).count();
	}
	/** Waits until madvise of `round` has returned; its result. */
	int wait(unsigned round)
	{
		for (unsigned d; (d = done_.load()) != round;)
			done_.wait(d);
		return result_.load();
	}

private:
	void run()
	{
		unsigned seen = 0;
		for (;;) {
			go_.wait(seen);
			seen = go_.load();
			if (stop_.load())
				return;
			const auto t0 = std::chrono::steady_clock::now();
			result_.store(madvise(base_, len_, MADV_DONTNEED) == 0 ? 0 : -errno);
			busy_ += std::chrono::steady_clock::now() - t0;
			done_.store(seen);
			done_.notify_one();
		}
	}

	char *base_;
	std::size_t len_;
	std::atomic<unsigned> go_{0}, done_{0};
	std::atomic<int> result_{0};
	std::chrono::steady_clock::duration busy_{}; /* written before done_ */
	std::atomic<bool> stop_{false};
	std::thread thread_;
};

struct Tally {
	unsigned rounds = 0;
	unsigned lost = 0;       /* DMA writes that went to a dropped page */
	unsigned in_window = 0;  /* last page still mapped just before READ_BEGIN */
	unsigned torn_after = 0; /* last page still mapped right after READ_BEGIN */
	unsigned retried = 0;    /* generation moved after the pin: not judged */
	double waited_ms = 0;    /* time spent in READ_BEGIN */
	double zap_ms = 0;       /* time spent in madvise */
};

enum class Pin { right_after_the_event, after_read_begin };

class ReadBegin : public ::testing::Test {
protected:
	void SetUp() override
	{
		if (std::thread::hardware_concurrency() < 2)
			GTEST_SKIP() << "needs two CPUs: the zap and the pin must overlap";
		ASSERT_EQ(madvise(area_.get(), area_.len(), MADV_NOHUGEPAGE), 0);
		ASSERT_EQ(dev_.watch(area_.get(), area_.len(), 9, &id_), 0);
	}

	static bool mapped(char *page)
	{
		unsigned char v = 0;
		if (mincore(page, kPage, &v) != 0)
			std::abort();
		return v & 1;
	}

	/* Rounds until `enough` says so or the time is up. */
	template <class Enough>
	Tally run(Pin when, Enough enough, unsigned max_rounds, std::chrono::seconds budget)
	{
		Tally t;
		Zapper zapper(area_.get(), area_.len());
		PinnedPage pinned;
		char *const last = area_.get() + (kPages - 1) * kPage;
		const auto deadline = std::chrono::steady_clock::now() + budget;
		for (unsigned round = 1; round <= max_rounds && !enough(t) &&
					 std::chrono::steady_clock::now() < deadline;
		     round++) {
			const char pattern = static_cast<char>(0x40 + round % 64);
			for (std::size_t i = 0; i < kPages; i++)
				area_.get()[i * kPage] = pattern;
			const std::uint64_t g0 = dev_.generation();
			zapper.start(round);
			std::uint64_t g;
			while ((g = dev_.generation()) == g0)
				__builtin_ia32_pause();
			/* g: the madvise's invalidation has started, nothing of it
			 * is known to be done; the protocol's "load the generation" */
			if (when == Pin::after_read_begin) {
				const bool open = mapped(last);
				const auto t0 = std::chrono::steady_clock::now();
				EXPECT_EQ(dev_.read_begin(id_), 0);
				t.waited_ms += std::chrono::duration<double, std::milli>(
						       std::chrono::steady_clock::now() - t0)
						       .count();
				t.in_window += open;
				t.torn_after += mapped(last);
			}
			EXPECT_EQ(pinned.pin(last), 0);
			const bool retry = dev_.generation() != g; /* the protocol's check */
			EXPECT_EQ(zapper.wait(round), 0);
			char marker[kMarkerBytes];
			std::memset(marker, 0, sizeof(marker));
			std::snprintf(marker, sizeof(marker), "dma write of round %u", round);
			EXPECT_EQ(pinned.dma_write(marker), 0);
			if (retry)
				t.retried++; /* a change after g: the caller would pin again */
			else
				t.lost += std::memcmp(last, marker, kMarkerBytes) != 0;
			EXPECT_EQ(pinned.unpin(), 0);
			t.rounds++;
		}
		t.zap_ms = zapper.busy_ms();
		return t;
	}

	void print(const char *what, const Tally &t)
	{
		std::printf("%s: %u rounds, %u DMA writes lost, READ_BEGIN entered while the "
			    "zap ran: %u, last page still mapped after it: %u, generation "
			    "moved after the pin: %u, %.2f ms in READ_BEGIN, %.2f ms in madvise\n",
			    what, t.rounds, t.lost, t.in_window, t.torn_after, t.retried,
			    t.waited_ms, t.zap_ms);
	}

	Dev dev_{0, true};
	Anon area_{kPages * kPage};
	std::uint64_t id_ = 0;
};

} // namespace

/* Negative control: pinning right after the event, as before READ_BEGIN,
 * takes the page being zapped at least once (usually most rounds). */
TEST_F(ReadBegin, NegativeControlPinWithoutItLosesWrites)
{
	const Tally t = run(Pin::right_after_the_event, [](const Tally &t) { return t.lost >= 5; },
			    400, std::chrono::seconds(60));
	print("without READ_BEGIN", t);
	EXPECT_GE(t.lost, 1u) << "no pin ever hit the window: the control proves nothing";
}

/* READ_BEGIN waits for the zap in progress: nothing of the range is left
 * mapped when it returns, and the page pinned next is the one the mapping
 * shows, so no DMA write is lost. */
TEST_F(ReadBegin, PinAfterItSeesTheNewPage)
{
	const Tally t = run(Pin::after_read_begin, [](const Tally &t) { return t.in_window >= 20; },
			    400, std::chrono::seconds(60));
	print("with READ_BEGIN", t);
	EXPECT_EQ(t.lost, 0u);
	EXPECT_EQ(t.torn_after, 0u);
	EXPECT_EQ(t.retried, 0u) << "nothing but the test's madvise changes the range";
	EXPECT_GE(t.in_window, 1u) << "READ_BEGIN never started while a zap ran: "
				      "this run proves nothing";
}
