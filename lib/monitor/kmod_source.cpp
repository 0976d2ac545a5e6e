/* SPDX-License-Identifier: MIT */
/*
 * The kernel-module event source (MRSYNC_SOURCE_KMOD): /dev/mrsync, whose
 * mmu interval notifiers record each change of a watched range in a ring and
 * bump a generation counter before the changing system call returns. Both
 * live in a read-only area this source maps; generation() points into it, so
 * the hit path loads the kernel's own counter. The ABI is the uapi header
 * <linux/mrsync.h>; docs/kmod.md describes it.
 *
 * drain() reads the entries the module published since the last drain, each
 * checked by its sequence number before and after the copy (a torn entry
 * counts as lost), then tells the module how far it read (CONSUME) so the
 * slots can be reused. A change that finds the ring full has no entry but
 * moves the header's overflow count: drain() then returns true once.
 *
 * prepare_pin() is MRSYNC_IOC_READ_BEGIN on the watch: the module reports a
 * change when its invalidation starts, before the pages are zapped, and the
 * ioctl waits until that invalidation has ended (mmu_interval_read_begin), so
 * a pin taken next never takes a page the kernel is about to drop. It needs
 * ABI 1.1 with MRSYNC_FEATURE_READ_BEGIN; open_device() refuses older modules.
 *
 * enable_wakeup() (a watcher's pollable fd) is the device fd itself: with
 * ABI 1.2 (MRSYNC_FEATURE_POLL) it polls readable while the generation
 * differs from the one acknowledged, and drain() then acknowledges the
 * generation it loaded first (MRSYNC_IOC_ACK). Without it, 1.1 still works
 * for everything else.
 *
 * Fork: the module does not copy the mapping into a child (and the child's
 * file would be refused anyway, -EBADFD). A child's hit path may still load
 * the generation word before the core rebuilds, so a child handler (the
 * sources phase of the fork registry, fork_guard.hpp) puts an anonymous page at the same address first; the source is
 * then dead (drain says "resync everything", watch fails) until abandoned.
 */
#include <fcntl.h>
#include <linux/mrsync.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <mrsync/mrsync.h>
#include <mrsync/source.hpp>

#include "address_space.hpp"
#include "fork_guard.hpp"
#include "format.hpp"
#include "unique_fd.hpp"
#include "unique_mmap.hpp"

namespace mrsync {
namespace {

using detail::errno_text;
using detail::UniqueFd;
using detail::UniqueMmap;

constexpr const char *kDevice = "/dev/mrsync";
/* The oldest module this library works with (READ_BEGIN); 1.2 adds poll,
 * which only enable_wakeup() needs. */
constexpr std::uint64_t kNeededMinor = 1;

int xioctl(int fd, unsigned long cmd, void *arg) noexcept
{
	/* WATCH fails with EINTR when the process has a signal or io_uring
	 * task work pending as the first watch registers the mm's notifier
	 * (mm_take_all_locks gives up): nothing was done, so ask again. Seen
	 * in fork children that use the io_uring HCA, 1 watch in ~500. */
	for (;;) {
		if (::ioctl(fd, cmd, arg) == 0)
			return 0;
		if (errno != EINTR)
			return errno;
	}
}

/** Opens the device and checks the ABI handshake; version out for sizing. */
Result<UniqueFd> open_device(mrsync_kmod_version &version)
{
	UniqueFd fd(::open(kDevice, O_RDWR | O_CLOEXEC));
	if (!fd) {
		const int err = errno;
		if (err == ENOENT || err == ENXIO || err == ENODEV)
			return make_error(ENODEV, std::string("no ") + kDevice +
							  ": the mrsync kernel module is not loaded "
							  "(modprobe mrsync)");
		return make_error(err, std::string("open ") + kDevice + ": " + errno_text(err));
	}
	version = {};
	if (int err = xioctl(fd.get(), MRSYNC_IOC_VERSION, &version))
		return make_error(err == ENOTTY ? EPROTO : err,
				  std::string(kDevice) + ": version handshake failed: " +
					  errno_text(err) + " (not the mrsync module?)");
	const std::uint64_t major = version.abi_version >> 16, minor = version.abi_version & 0xffff;
	const std::string found = std::string(kDevice) + ": module ABI " + std::to_string(major) +
				  "." + std::to_string(minor);
	const std::string needed = "this library needs " + std::to_string(MRSYNC_ABI_MAJOR) + "." +
				   std::to_string(kNeededMinor);
	if (major != MRSYNC_ABI_MAJOR || minor < kNeededMinor)
		return make_error(EPROTO, found + ", " + needed + " or a later minor");
	if (!(version.features & MRSYNC_FEATURE_READ_BEGIN))
		return make_error(EPROTO, found + " does not report MRSYNC_FEATURE_READ_BEGIN; " +
						  needed + " with it");
	if (version.entry_size != sizeof(mrsync_kmod_event) || !(version.features & MRSYNC_FEATURE_CONSUME))
		return make_error(EPROTO, std::string(kDevice) + ": unexpected ring layout");
	return fd;
}

/** Ring entries for a requested size: a power of two within the module's bounds. */
std::uint64_t ring_entries(std::uint32_t requested, const mrsync_kmod_version &v)
{
	std::uint64_t want = requested ? requested : MRSYNC_RING_DEFAULT;
	std::uint64_t n = 1;
	while (n < want)
		n <<= 1;
	return std::clamp<std::uint64_t>(n, v.ring_min, v.ring_max);
}

class KmodSource;

/* Live sources, for the fork child handler. Its lock is held across fork()
 * (prepare/parent/child handlers) so the child finds the list consistent. */
std::mutex live_lock;
std::vector<KmodSource *> &live_sources()
{
	static std::vector<KmodSource *> all;
	return all;
}

class KmodSource final : public EventSource {
public:
	KmodSource(UniqueFd fd, UniqueMmap ring, const mrsync_kmod_version &version) noexcept
		: fd_(std::move(fd)), ring_(std::move(ring)), version_(version),
		  entries_(reinterpret_cast<const mrsync_kmod_event *>(ring_.data() +
								       header()->ring_offset)),
		  mask_(header()->ring_size - 1)
	{
		install_fork_handler();
		std::lock_guard guard(live_lock);
		live_sources().push_back(this);
	}

	~KmodSource() override
	{
		std::lock_guard guard(live_lock);
		auto &all = live_sources();
		all.erase(std::remove(all.begin(), all.end(), this), all.end());
	}

	std::string_view name() const noexcept override { return "kmod"; }

	/* Thread safety: any thread; the word is in the module's mapping. */
	const std::uint64_t *generation() const noexcept override
	{
		/* __u64 is unsigned long long, std::uint64_t unsigned long: same object */
		return reinterpret_cast<const std::uint64_t *>(&header()->generation);
	}

	/* Thread safety: one caller at a time (the core's sources lock, SourceHub). */
	bool drain(std::vector<Range> &out) override
	{
		if (forked_.load(std::memory_order_acquire))
			return true;
		const mrsync_kmod_header *hdr = header();
		/* First: what this drain acknowledges (enable_wakeup()). */
		const std::uint64_t gen = load_acquire(&hdr->generation);
		const std::uint64_t overflow = load_acquire(&hdr->overflow);
		const std::uint64_t head = load_acquire(&hdr->head);
		bool lost = false;
		for (std::uint64_t i = tail_; i < head; ++i) {
			const mrsync_kmod_event *slot = &entries_[i & mask_];
			const std::uint64_t seq = load_acquire(&slot->seq);
			const std::uint64_t start = load_relaxed(&slot->start);
			const std::uint64_t end = load_relaxed(&slot->end);
			std::atomic_thread_fence(std::memory_order_acquire);
			if (seq != i + 1 || load_relaxed(&slot->seq) != seq || start >= end) {
				lost = true; /* torn or never published: cannot trust it */
				continue;
			}
			out.push_back(Range{start, end});
		}
		if (head != tail_) {
			mrsync_kmod_consume consume{head, 0};
			if (xioctl(fd_.get(), MRSYNC_IOC_CONSUME, &consume) != 0)
				lost = true;
			tail_ = head;
		}
		if (overflow != overflow_seen_) {
			overflow_seen_ = overflow;
			lost = true;
		}
		if (polled_ && gen != acked_) {
			mrsync_kmod_ack ack{gen, 0};
			if (xioctl(fd_.get(), MRSYNC_IOC_ACK, &ack) == 0)
				acked_ = gen;
			/* else the fd stays readable: a spurious wake-up, not a loss */
		}
		return lost;
	}

	/* The device fd (ABI 1.2): readable until drain() acknowledges.
	 * Thread safety: one caller at a time, as drain(). */
	Result<int> enable_wakeup() override
	{
		if (forked_.load(std::memory_order_acquire))
			return make_error(EBADFD, "enable_wakeup: the kmod source belongs to the "
						  "parent process");
		if (!(version_.features & MRSYNC_FEATURE_POLL))
			return make_error(ENOTSUP,
					  std::string(kDevice) + ": module ABI " +
						  std::to_string(version_.abi_version >> 16) + "." +
						  std::to_string(version_.abi_version & 0xffff) +
						  " cannot be polled (MRSYNC_FEATURE_POLL: ABI 1.2; "
						  "load the module of this library)");
		polled_ = true;
		return fd_.get();
	}

	/* Thread safety: any thread (one ioctl). */
	Result<std::uint64_t> watch(std::uint64_t va, std::uint64_t len) override
	{
		auto range = detail::checked_range(va, len, "watch");
		if (!range)
			return std::move(range).error();
		auto aligned = detail::align_out(*range, detail::page_size());
		if (!aligned)
			return make_error(EINVAL, "watch: " + detail::format_range(*range) +
							  " wraps when rounded to pages");
		if (forked_.load(std::memory_order_acquire))
			return make_error(EBADFD, "watch: the kmod source belongs to the parent process");
		mrsync_kmod_watch w{};
		w.addr = aligned->start;
		w.len = aligned->end - aligned->start;
		w.cookie = va;
		if (int err = xioctl(fd_.get(), MRSYNC_IOC_WATCH, &w))
			return make_error(err, "watch " + detail::format_range(*aligned) +
						       " with /dev/mrsync: " + errno_text(err));
		return w.id;
	}

	/* Thread safety: any thread (one ioctl); waits for a running callback. */
	void unwatch(std::uint64_t handle) noexcept override
	{
		if (forked_.load(std::memory_order_acquire) || handle == 0)
			return;
		mrsync_kmod_unwatch u{handle, 0};
		(void)xioctl(fd_.get(), MRSYNC_IOC_UNWATCH, &u);
	}

	/*
	 * The begin half of the pin protocol (<linux/mrsync.h>, READ_BEGIN):
	 * returns once no invalidation of the watch `handle` is in progress, so
	 * a change already reported has zapped its pages and the pin that
	 * follows takes the new ones. The module watches addresses, not
	 * mappings, so nothing needs re-arming and `range` (inside the watch)
	 * only names the pin in messages. The retry half is the core's check of
	 * generation() after the pin.
	 * Thread safety: any thread (one ioctl); may sleep until the
	 * invalidations running in the process end.
	 */
	Status prepare_pin(std::uint64_t handle, Range range) override
	{
		if (forked_.load(std::memory_order_acquire))
			return make_error(EBADFD, "prepare_pin: the kmod source belongs to the "
						  "parent process");
		mrsync_kmod_read_begin rb{};
		rb.id = handle;
		if (int err = xioctl(fd_.get(), MRSYNC_IOC_READ_BEGIN, &rb))
			return make_error(err, "prepare_pin " + detail::format_range(range) +
						       ": READ_BEGIN on watch " +
						       std::to_string(handle) +
						       " of /dev/mrsync: " + errno_text(err));
		return {};
	}

	/* Fork child: the file belongs to the parent's mm; close it only. The
	 * mapping was replaced by the fork handler and goes with the object. */
	void abandon() noexcept override
	{
		forked_.store(true, std::memory_order_release);
		fd_.reset();
	}

	/* In the fork child, before fork() returns: keep the generation word
	 * readable (the mapping was not inherited) and kill the source. */
	void after_fork_child() noexcept
	{
		::mmap(ring_.get(), ring_.size(), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		       -1, 0);
		forked_.store(true, std::memory_order_release);
	}

private:
	/* The header the module writes at the start of the mapping. */
	const mrsync_kmod_header *header() const noexcept
	{
		return reinterpret_cast<const mrsync_kmod_header *>(ring_.data());
	}

	/* The words live in a read-only mapping the module writes: atomic
	 * loads of const memory (std::atomic_ref<const T> is C++26). */
	static std::uint64_t load_acquire(const __u64 *p) noexcept
	{
		return __atomic_load_n(p, __ATOMIC_ACQUIRE);
	}
	static std::uint64_t load_relaxed(const __u64 *p) noexcept
	{
		return __atomic_load_n(p, __ATOMIC_RELAXED);
	}

	/* The sources phase of the fork registry (fork_guard.hpp). */
	static void install_fork_handler()
	{
		static std::once_flag once;
		std::call_once(once, [] {
			detail::fork_register(
				detail::ForkPhase::sources,
				{.prepare = [] () noexcept { live_lock.lock(); },
				 .parent = [] () noexcept { live_lock.unlock(); },
				 .child = [] () noexcept {
					 for (KmodSource *s : live_sources())
						 s->after_fork_child();
					 live_lock.unlock();
				 }});
		});
	}

	UniqueFd fd_;
	UniqueMmap ring_; /* the module's header + ring, read-only */
	mrsync_kmod_version version_;     /* the handshake's answer */
	const mrsync_kmod_event *entries_;
	std::uint64_t mask_;
	std::uint64_t tail_ = 0;          /* entries read so far (drain only) */
	std::uint64_t overflow_seen_ = 0; /* header overflow at the last drain */
	bool polled_ = false;             /* enable_wakeup() was called (drain only) */
	std::uint64_t acked_ = 0;         /* last MRSYNC_IOC_ACK (drain only) */
	std::atomic<bool> forked_{false};
};

bool kmod_available(std::string &why)
{
	mrsync_kmod_version version;
	auto fd = open_device(version);
	if (!fd) {
		why = fd.error().message;
		return false;
	}
	return true;
}

Result<std::unique_ptr<EventSource>> kmod_create(const SourceConfig &config)
{
	mrsync_kmod_version version;
	auto fd = open_device(version);
	if (!fd)
		return std::move(fd).error();

	mrsync_kmod_ring_config rc{ring_entries(config.ring_entries, version), 0};
	if (int err = xioctl(fd->get(), MRSYNC_IOC_SET_RING, &rc))
		return make_error(err, std::string(kDevice) + ": ring of " +
					       std::to_string(rc.entries) +
					       " entries: " + errno_text(err));
	const std::uint64_t page = detail::page_size();
	const std::size_t len = version.ring_offset +
				((rc.entries * version.entry_size + page - 1) & ~(page - 1));
	UniqueMmap ring(::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd->get(), 0), len);
	if (!ring)
		return make_error(errno, std::string("mmap ") + kDevice + ": " + errno_text(errno));
	const auto *hdr = reinterpret_cast<const mrsync_kmod_header *>(ring.data());
	if (hdr->magic != MRSYNC_MAGIC || hdr->ring_size != rc.entries || hdr->map_size != len ||
	    hdr->ring_offset != version.ring_offset)
		return make_error(EPROTO, std::string(kDevice) + ": unexpected ring header");
	return std::unique_ptr<EventSource>(
		std::make_unique<KmodSource>(std::move(fd.value()), std::move(ring), version));
}

const SourceFactory kmod_factory{
	.name = "kmod",
	.kind = MRSYNC_SOURCE_KMOD,
	.available = kmod_available,
	.create = kmod_create,
};

} // namespace
} // namespace mrsync

MRSYNC_REGISTER_SOURCE(mrsync::kmod_factory)
