/* SPDX-License-Identifier: MIT */
/* The DPDK event source (MRSYNC_SOURCE_DPDK) and the EAL memory-event
 * subscription that feeds it.
 *
 * The EAL calls the callback synchronously on the thread that allocates or
 * frees, with the memory hotplug lock held, and reports FREE *before* it
 * unmaps. So the callback does O(1) work on memory reserved in advance: a
 * FREE is appended to every live source's ring (which bumps its generation:
 * the next lookup resyncs), an ALLOC is queued for a hint that runs later,
 * outside that lock. It never walks the memsegs (rte_memseg_walk() takes the
 * lock the EAL already holds: a deadlock) and never takes the cache's lock
 * (a thread holding it may be pinning, and pinning must never wait on DPDK). */
#include <algorithm>
#include <array>
#include <cerrno>
#include <new>

#include <cstdio>
#include <string>

#include <rte_eal_memconfig.h>
#include <rte_errno.h>
#include <rte_memory.h>

#include <mrsync/event_buffer.hpp>
#include <mrsync/mrsync.h>

#include "dpdk_pvt.hpp"

namespace mrsync::dpdk {

RTE_LOG_REGISTER(logtype, lib.mrsync, INFO);

namespace {

class DpdkSource;

/* Everything the callback touches; guarded by `mu`, a leaf lock held only
 * for O(1) work and never while calling out. */
struct Shared {
	std::mutex mu;
	std::vector<DpdkSource *> sources; /* reserved at attach, never grows inside the callback */
	std::array<Range, 256> allocs{};
	std::size_t nallocs = 0;
	bool allocs_overflowed = false;
	bool subscribed = false;
	EventCounters counters;
	bool eal_attached = false;
};

Shared &shared()
{
	static Shared s;
	return s;
}

class DpdkSource final : public BufferedEventSource {
public:
	explicit DpdkSource(const SourceConfig &config)
		: BufferedEventSource(config.ring_entries), unguarded_(config.test_unguarded)
	{
		std::lock_guard lock(shared().mu);
		shared().sources.push_back(this);
	}
	~DpdkSource() override { leave(); }

	std::string_view name() const noexcept override { return "dpdk"; }

	/* The EAL reports on all its memory: a watch is bookkeeping only. */
	Result<std::uint64_t> watch(std::uint64_t, std::uint64_t) override { return next_++; }
	void unwatch(std::uint64_t) noexcept override {}

	/* Only the EAL's own memory, the memseg lists, is covered by its events:
	 * memory outside them (an external buffer, the application's heap)
	 * changes without a DPDK event, another source must vouch for it. The
	 * EAL reports FREE before it unmaps, both under the memory hotplug lock
	 * (held for writing): once we can read-lock it, no free is half done,
	 * and a later one moves the generation before it unmaps. */
	Status prepare_pin(std::uint64_t, Range range) override
	{
		if (!unguarded_ && !eal_memory(range.start, range.end - range.start))
			return make_error(ENOTSUP, "dpdk: [" + hex(range.start) + ", " +
							   hex(range.end) + ") is not memory of the "
							   "EAL's memseg lists, so its memory events do "
							   "not cover it");
		settle();
		return {};
	}

	/* A fork child shares nothing with the EAL's callbacks of the parent
	 * (DPDK does not support fork): stop receiving. */
	void abandon() noexcept override { leave(); }

private:
	static void settle() noexcept
	{
		rte_mcfg_mem_read_lock();
		rte_mcfg_mem_read_unlock();
	}

	static bool eal_memory(std::uint64_t va, std::uint64_t len) noexcept
	{
		const rte_memseg_list *msl = rte_mem_virt2memseg_list(reinterpret_cast<void *>(va));
		if (!msl || msl->external)
			return false;
		const auto base = reinterpret_cast<std::uint64_t>(msl->base_va);
		return va + len <= base + msl->len;
	}

	static std::string hex(std::uint64_t v)
	{
		char text[24];
		std::snprintf(text, sizeof text, "%#llx", static_cast<unsigned long long>(v));
		return text;
	}

	void leave() noexcept
	{
		std::lock_guard lock(shared().mu);
		auto &v = shared().sources;
		v.erase(std::remove(v.begin(), v.end(), this), v.end());
	}
	std::uint64_t next_ = 1;
	const bool unguarded_; /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */
};

void on_mem_event(enum rte_mem_event type, const void *addr, size_t len, void *)
{
	Shared &s = shared();
	const auto start = reinterpret_cast<std::uint64_t>(addr);
	const Range range{start, start + len};
	std::lock_guard lock(s.mu);
	if (type == RTE_MEM_EVENT_FREE) {
		s.counters.frees.fetch_add(1, std::memory_order_relaxed);
		s.counters.freed_bytes.fetch_add(len, std::memory_order_relaxed);
		for (DpdkSource *source : s.sources)
			source->events().append(range); /* then bumps: lookups resync */
		/* An allocation freed before it was hinted needs no hint. */
		std::size_t kept = 0;
		for (std::size_t i = 0; i < s.nallocs; ++i)
			if (s.allocs[i].end <= range.start || range.end <= s.allocs[i].start)
				s.allocs[kept++] = s.allocs[i];
		s.nallocs = kept;
		return;
	}
	s.counters.allocs.fetch_add(1, std::memory_order_relaxed);
	if (s.nallocs < s.allocs.size())
		s.allocs[s.nallocs++] = range;
	else
		s.allocs_overflowed = true;
}

bool dpdk_available(std::string &why)
{
	std::lock_guard lock(shared().mu);
	if (shared().eal_attached)
		return true;
	why = "the DPDK source comes with mrsync_dpdk_attach(), after rte_eal_init()";
	return false;
}

Result<std::unique_ptr<EventSource>> dpdk_create(const SourceConfig &config)
{
	try {
		return std::unique_ptr<EventSource>(std::make_unique<DpdkSource>(config));
	} catch (const std::bad_alloc &) {
		return make_error(ENOMEM, "dpdk source: no memory for the event ring");
	}
}

const SourceFactory dpdk_factory{
	.name = "dpdk",
	.kind = MRSYNC_SOURCE_DPDK,
	.available = dpdk_available,
	.create = dpdk_create,
};

} // namespace

bool MemEvents::subscribe()
{
	{
		std::lock_guard lock(shared().mu);
		if (shared().subscribed)
			return true;
	}
	/* Not under our lock: registering takes the EAL's callback lock, which
	 * the EAL holds while it calls on_mem_event (which takes ours). */
	if (rte_mem_event_callback_register("mrsync", on_mem_event, nullptr) < 0) {
		if (rte_errno == EEXIST)
			return true;
		return false; /* ENOTSUP: legacy memory or no hugepages */
	}
	std::lock_guard lock(shared().mu);
	shared().subscribed = true;
	return true;
}

void MemEvents::unsubscribe() noexcept
{
	bool was;
	{
		std::lock_guard lock(shared().mu);
		was = std::exchange(shared().subscribed, false);
		shared().nallocs = 0;
		shared().allocs_overflowed = false;
	}
	if (was)
		rte_mem_event_callback_unregister("mrsync", nullptr);
}

void MemEvents::take_allocs(std::vector<Range> &out, bool &overflowed)
{
	std::array<Range, 256> copy;
	std::size_t n;
	{
		std::lock_guard lock(shared().mu);
		n = shared().nallocs;
		std::copy_n(shared().allocs.begin(), n, copy.begin());
		shared().nallocs = 0;
		overflowed = std::exchange(shared().allocs_overflowed, false);
	}
	out.insert(out.end(), copy.begin(), copy.begin() + n); /* may allocate: outside the lock */
}

EventCounters &MemEvents::counters() noexcept { return shared().counters; }

void set_eal_attached(bool attached) noexcept
{
	std::lock_guard lock(shared().mu);
	shared().eal_attached = attached;
}

} // namespace mrsync::dpdk

MRSYNC_REGISTER_SOURCE(mrsync::dpdk::dpdk_factory)
