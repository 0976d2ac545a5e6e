/* SPDX-License-Identifier: MIT */
/* The context's life cycle and the slow path of a lookup. */
#include "context.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <cstdlib>
#include <string>

#include <mrsync/log.hpp>
#include <mrsync/testing.h> /* MRSYNC_CTX_F_TEST_UNGUARDED_PINS */

#include "fork_guard.hpp"
#include "mrsync_config.h"
#include "format.hpp"
#include "subscription.hpp"

namespace mrsync::detail {

namespace {

std::atomic<std::uint64_t> next_context_id{1};

constexpr std::uint32_t kDefaultMaxRegions = 4096;
constexpr std::uint32_t kMaxMaxRegions = 1u << 20;
constexpr std::uint64_t kDefaultCompactThreshold = 64ull << 20;
constexpr std::uint32_t kKnownSources =
	MRSYNC_SOURCE_KMOD | MRSYNC_SOURCE_UFFD | MRSYNC_SOURCE_MANUAL | MRSYNC_SOURCE_DPDK;

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v & ~(a - 1); }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

Status check_params(const mrsync_params &p)
{
	if (p.struct_size != sizeof(mrsync_params))
		return make_error(EINVAL, fmt("params->struct_size is %u, expected %zu: initialise "
					      "the struct with MRSYNC_PARAMS_INIT",
					      p.struct_size, sizeof(mrsync_params)));
	if (p.sources & ~kKnownSources)
		return make_error(EINVAL, fmt("params->sources has unknown bits 0x%x",
					      p.sources & ~kKnownSources));
	if (p.flags & ~std::uint32_t(MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK |
				     MRSYNC_CTX_F_TEST_ONLY_MASK))
		return make_error(EINVAL, fmt("params->flags has unknown bits 0x%x", p.flags));
	if (p.reserved)
		return make_error(EINVAL, "params->reserved must be 0");
	if (p.entry_size && (!std::has_single_bit(p.entry_size) ||
			     p.entry_size < std::uint64_t(sysconf(_SC_PAGESIZE)) ||
			     p.entry_size > (1ull << 30)))
		return make_error(EINVAL, fmt("params->entry_size %" PRIu64 " is not a power of two "
					      "between the page size and 1 GiB",
					      p.entry_size));
	if (p.max_regions > kMaxMaxRegions)
		return make_error(EINVAL, fmt("params->max_regions %u exceeds %u", p.max_regions,
					      kMaxMaxRegions));
	if (p.ring_entries && !std::has_single_bit(p.ring_entries))
		return make_error(EINVAL, fmt("params->ring_entries %u is not a power of two",
					      p.ring_entries));
	return {};
}

int current_tid() { return static_cast<int>(syscall(SYS_gettid)); }

} // namespace

Result<std::unique_ptr<Driver>> open_driver(const char *name, std::uint64_t entry_size,
					     const void *arg)
{
	const char *wanted = name ? name : "uring";
	const DriverFactory *factory = find_driver(wanted);
	if (!factory)
		return make_error(ENODEV, fmt("params->driver '%s' is not built into this libmrsync",
					      wanted));
	std::string why;
	if (!factory->available(why))
		return make_error(ENODEV, fmt("driver '%s' is not usable here: %s", wanted,
					      why.c_str()));
	return factory->create(DriverConfig{entry_size, arg});
}

/* The sources to open: the requested mask, or the kernel module when its
 * device exists and userfaultfd otherwise (said once in the log). */
Result<std::vector<std::unique_ptr<EventSource>>> open_sources(std::uint32_t &mask,
							       const SourceConfig &config)
{
	if (!mask) {
		std::string why;
		const SourceFactory *kmod = find_source(MRSYNC_SOURCE_KMOD);
		if (kmod && kmod->available(why)) {
			mask = MRSYNC_SOURCE_KMOD;
		} else {
			static std::once_flag said;
			std::call_once(said, [&] {
				MRSYNC_LOG(warning, "core", "kernel module source unavailable (%s): "
					   "using userfaultfd, which serves private anonymous "
					   "memory only and cannot see two changes: shmat(SHM_REMAP) "
					   "over registered memory, and the zap of a MADV_DONTNEED "
					   "racing a lookup of the same page (docs/design.md, \"What "
					   "userfaultfd cannot see\"); load the mrsync module to "
					   "close both",
					   kmod ? why.c_str() : "not built");
			});
			mask = MRSYNC_SOURCE_UFFD;
		}
	}
	std::vector<std::unique_ptr<EventSource>> sources;
	for (std::uint32_t bit = 1; bit & kKnownSources; bit <<= 1) {
		if (!(mask & bit))
			continue;
		const SourceFactory *factory = find_source(bit);
		std::string why = "not built into this libmrsync";
		if (!factory || !factory->available(why))
			return make_error(ENODEV, fmt("params->sources asks for source 0x%x, which is "
						      "not usable here: %s", bit, why.c_str()));
		auto source = factory->create(config);
		if (!source)
			return std::move(source).error();
		sources.push_back(std::move(source.value()));
	}
	return sources;
}

Result<std::shared_ptr<SourceHub>> open_hub(std::uint32_t &mask, const SourceConfig &config,
					    SourceHub::Fanout fanout)
{
	auto sources = open_sources(mask, config);
	if (!sources)
		return std::move(sources).error();
	return std::make_shared<SourceHub>(std::move(sources.value()), fanout);
}

SourceHub::Fanout fanout_of(const mrsync_params &params)
{
	return (params.flags & MRSYNC_CTX_F_TEST_NO_FANOUT) ? SourceHub::Fanout::test_off
							   : SourceHub::Fanout::on;
}

SourceConfig source_config(const mrsync_params &params)
{
	return SourceConfig{params.ring_entries,
			    (params.flags & MRSYNC_CTX_F_TEST_UNGUARDED_PINS) != 0};
}

Context::Context(const mrsync_params &params, VaTable table)
	: id_(next_context_id.fetch_add(1)),
	  check_generations_(!(params.flags & MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK)),
	  guarded_(!(params.flags & MRSYNC_CTX_F_TEST_UNGUARDED_PINS)),
	  revoke_refused_(!(params.flags & MRSYNC_CTX_F_TEST_NO_REVOKE)),
	  table_(std::move(table)),
	  /* room for the live limit plus as many retired-but-held regions */
	  slab_(std::make_unique<Region[]>(2 * params.max_regions)),
	  slab_size_(2 * params.max_regions), params_(params), entry_size_(params.entry_size)
{
	hot_.id = id_;
	/* mrsync/mru.h reads the handle as a struct mrsync_ctx_hot. */
	if (static_cast<const void *>(this) != static_cast<const void *>(&hot_))
		std::abort();
	for (std::uint32_t i = 0; i < slab_size_; ++i)
		slab_[i].slot = i;
	free_slots_.reserve(slab_size_);
	for (std::uint32_t i = slab_size_; i-- > 0;)
		free_slots_.push_back(i);
}

Result<std::unique_ptr<Context>> Context::create(const mrsync_params &given)
{
	if (auto ok = check_params(given); !ok)
		return std::move(ok).error();
	mrsync_params params = given;
	if (!params.max_regions)
		params.max_regions = kDefaultMaxRegions;
	if (!params.compact_threshold)
		params.compact_threshold = kDefaultCompactThreshold;
	if (!params.ring_entries)
		params.ring_entries = 1024;
	if (auto ok = init_reader_sync(); !ok)
		return std::move(ok).error();
	static_assert(sizeof(mrsync_ctx_hot::words) / sizeof(void *) >= kMaxSources,
		      "the inline hit path must see every source's word");

	auto driver = open_driver(params.driver,
				  params.entry_size ? params.entry_size : MRSYNC_DEFAULT_ENTRY_SIZE,
				  params.driver_arg);
	if (!driver)
		return std::move(driver).error();
	const std::uint64_t granularity = (*driver)->caps().entry_granularity;
	if (!params.entry_size)
		params.entry_size = std::max<std::uint64_t>(granularity, MRSYNC_DEFAULT_ENTRY_SIZE);
	if (params.entry_size < granularity)
		return make_error(EINVAL, fmt("params->entry_size %" PRIu64 " is below the %s "
					      "driver's granularity %" PRIu64,
					      params.entry_size, std::string((*driver)->name()).c_str(),
					      granularity));
	std::uint32_t kinds = params.sources;
	auto hub = open_hub(kinds, source_config(params), fanout_of(params));
	if (!hub)
		return std::move(hub).error();
	/* userfaultfd cannot see a MADV_DONTNEED's zap end, so only a lookup
	 * that needs a page may pin it while it may be changing; with entries
	 * larger than a page a lookup would pin pages of its entries nobody
	 * asked for. Unless a source that settles every pin is there too. */
	if ((kinds & MRSYNC_SOURCE_UFFD) && !(kinds & (MRSYNC_SOURCE_KMOD | MRSYNC_SOURCE_MANUAL)) &&
	    params.entry_size > std::uint64_t(sysconf(_SC_PAGESIZE)) &&
	    !(params.flags & MRSYNC_CTX_F_TEST_UNGUARDED_PINS))
		return make_error(EINVAL, fmt("params->entry_size %" PRIu64 " is larger than a page, "
					      "which the userfaultfd source cannot serve safely "
					      "(a lookup would pin neighbouring pages that may be "
					      "changing, docs/design.md): use the page size, or the "
					      "mrsync kernel module as the source",
					      params.entry_size));
	if ((*hub)->size() > kMaxSources)
		return make_error(EINVAL, "params->sources asks for too many sources");
	auto table = VaTable::create();
	if (!table)
		return std::move(table).error();

	std::unique_ptr<Context> ctx(new Context(params, std::move(table.value())));
	ctx->holes_ok_ = (*driver)->caps().holes_ok;
	ctx->driver_ = std::move(driver.value());
	ctx->backings_.emplace(*ctx->driver_);
	ctx->source_mask_ = kinds;
	ctx->adopt_sources(std::move(hub.value()));
	ctx->seen_.store(mrsync_gen_begin(ctx->words_, ctx->checked_words_));
	fork_guard_add(ctx.get());
	ctx->log_choice("created");
	return ctx;
}

Context::~Context()
{
	fork_guard_remove(this);
	std::lock_guard guard(lock_);
	/* The watcher first: its subscriptions unwatch through the hub. A
	 * parent's watcher kept in a fork child is left allocated: a thread
	 * of the parent may have held its locks at the fork. */
	watcher_.reset();
	for (auto &parents : abandoned_watchers_)
		(void)parents.release();
	if (forked_) { /* a fork child that never rebuilt: nothing here is ours */
		driver_->abandon();
		backings_->abandon();
	}
	{
		Update u(*this);
		for (std::uint32_t i = 0; i < slab_size_; ++i)
			if (slab_[i].state != Region::State::free)
				free_region_locked(u, slab_[i]);
		if (forked_)
			u.abandon(); /* the parent's device: nothing to fence */
	}
	backings_.reset(); /* unpins what is left, before the driver goes */
}

void Context::log_choice(const char *what) const
{
	if (!log_enabled(LogLevel::info))
		return;
	std::string names;
	for (std::size_t i = 0; i < hub_->size(); ++i)
		names += (names.empty() ? "" : "+") + std::string(hub_->name(i));
	MRSYNC_LOG(info, "core", "context %" PRIu64 " %s: driver '%s', entry size %" PRIu64
		   ", event sources %s%s", id_, what, std::string(driver_->name()).c_str(),
		   entry_size_, names.c_str(), check_generations_ ? "" : " (generation checks off)");
}

void Context::adopt_sources(std::shared_ptr<SourceHub> hub)
{
	hub_ = std::move(hub);
	client_ = hub_->join();
	nsources_ = static_cast<std::uint32_t>(hub_->size());
	checked_words_ = check_generations_ ? nsources_ : 0;
	for (std::uint32_t i = 0; i < nsources_; ++i)
		words_[i] = hub_->generation(i);
	words_[nsources_] = &fork_base_;
	for (std::uint32_t i = 0; i < 4; ++i)
		hot_.words[i] = i < checked_words_ ? words_[i] : nullptr;
	hot_.nwords = checked_words_;
	bump_epoch();
}

Status Context::validate_request(std::uint64_t addr, std::uint64_t len,
				 std::uint32_t access) const
{
	if (!addr)
		return make_error(EINVAL, "addr is NULL");
	if (!len)
		return make_error(EINVAL, "len is 0");
	if (addr + len < addr)
		return make_error(EINVAL, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") wraps around the address space",
					      addr, len));
	if (!VaTable::cacheable(align_down(addr, entry_size_), align_up(addr + len, entry_size_)))
		return make_error(EINVAL, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") lies beyond the 47-bit user address space",
					      addr, len));
	if (access & ~std::uint32_t(MRSYNC_ACCESS_ALL))
		return make_error(EINVAL, fmt("access has unknown bits 0x%x",
					      access & ~std::uint32_t(MRSYNC_ACCESS_ALL)));
	return {};
}

std::uint64_t Context::generation() const noexcept
{
	return mrsync_gen_begin(words_, nsources_ + 1);
}

int Context::generation_words(const std::uint64_t **words, int max) const noexcept
{
	/* Under the lock: a fork child's rebuild swaps the sources' words. */
	std::lock_guard guard(lock_);
	const int n = std::min(max, int(nsources_ + 1));
	std::copy_n(words_, std::max(n, 0), words);
	return n;
}

int Context::for_each_region(void (*fn)(void *, const mrsync_region_info *), void *arg)
{
	std::lock_guard guard(lock_);
	int n = 0;
	for (const auto &[key, r] : index_) {
		const Keys keys = r->current_keys();
		const mrsync_region_info info{r->begin_va(), r->size.load(), keys.lkey, keys.rkey,
					      r->access.load(), 0, r->translation->invalid_bytes()};
		fn(arg, &info);
		++n;
	}
	return n;
}

bool Context::generations_moved() const noexcept
{
	return mrsync_gen_retry(words_, checked_words_, seen_.load(std::memory_order_relaxed));
}

ThreadState &Context::thread_state_locked()
{
	if (tls_slots[0].ctx_id == id_)
		return *tls_slots[0].state;
	for (int i = 1; i < kTlsSlots; ++i)
		if (tls_slots[i].ctx_id == id_) {
			std::swap(tls_slots[0], tls_slots[i]);
			return *tls_slots[0].state;
		}
	/* A new thread (or one whose cache was displaced). Thread ids are
	 * recycled, and a recycled id adopting a dead thread's counters is
	 * harmless: only sums over threads mean anything. */
	const int tid = current_tid();
	ThreadState *&state = thread_by_tid_[tid];
	if (!state) {
		threads_.push_back(std::make_unique<ThreadState>(slab_size_));
		state = threads_.back().get();
	}
	std::move_backward(tls_slots, tls_slots + kTlsSlots - 1, tls_slots + kTlsSlots);
	tls_slots[0] = {id_, state};
	return *state;
}

Status Context::notify_unmap(std::uint64_t addr, std::uint64_t len)
{
	if (!addr || !len || addr + len < addr)
		return make_error(EINVAL, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") is empty, NULL or wraps",
					      addr, len));
	if (auto *manual = hub_->manual())
		return manual->notify({addr, addr + len});
	return make_error(ENOTSUP, "the context has no manual source: create it with "
				   "params.sources including MRSYNC_SOURCE_MANUAL");
}

Status Context::resync()
{
	std::lock_guard guard(lock_);
	if (forked_)
		if (auto ok = rebuild_after_fork_locked(); !ok)
			return ok;
	return resync_locked();
}

Result<Watcher *> Context::watcher()
{
	std::lock_guard guard(lock_);
	if (forked_) /* the child's own sources first: a watcher on the parent's sees nothing */
		if (auto ok = rebuild_after_fork_locked(); !ok)
			return std::move(ok).error();
	if (!watcher_) {
		auto made = Watcher::attach(hub_);
		if (!made)
			return std::move(made).error();
		watcher_ = std::move(made.value());
	}
	return watcher_.get();
}

Result<int> Context::compact()
{
	std::lock_guard guard(lock_);
	return static_cast<int>(compact_locked());
}

mrsync_stats Context::stats()
{
	std::lock_guard guard(lock_);
	mrsync_stats s{};
	for (const auto &t : threads_)
		s.hits += t->hits.load(std::memory_order_relaxed);
	s.misses = stats_.misses;
	s.resyncs = stats_.resyncs;
	s.full_resyncs = stats_.full_resyncs;
	s.events = stats_.events;
	s.entries_repinned = stats_.entries_repinned;
	s.bytes_repinned = stats_.bytes_repinned;
	s.entries_invalidated = stats_.entries_invalidated;
	s.regions = live_regions_;
	s.registered_bytes = registered_bytes_;
	s.pinned_bytes = backings_->pinned_bytes();
	s.stale_pinned_bytes = backings_->stale_bytes();
	for (std::uint32_t i = 0; i < slab_size_; ++i)
		if (slab_[i].state == Region::State::live)
			s.invalid_bytes += slab_[i].translation->invalid_bytes();
	s.registrations = stats_.registrations;
	s.evictions = stats_.evictions;
	s.compactions = stats_.compactions;
	s.key_changes = stats_.key_changes;
	return s;
}

} // namespace mrsync::detail
