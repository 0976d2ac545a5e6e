/* SPDX-License-Identifier: MIT */
/* The context's life cycle and the slow path of a lookup. */
#include "context.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cinttypes>
#include <string>

#include <mrsync/log.hpp>

#include "fork_guard.hpp"
#include "mapped_ranges.hpp"
#include "mrsync_config.h"
#include "format.hpp"

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
				     MRSYNC_CTX_F_TEST_UNGUARDED_PINS))
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

int current_tid() { return static_cast<int>(syscall(SYS_gettid)); }

} // namespace

SourceConfig source_config(const mrsync_params &params)
{
	return SourceConfig{params.ring_entries,
			    (params.flags & MRSYNC_CTX_F_TEST_UNGUARDED_PINS) != 0};
}

Context::Context(const mrsync_params &params, VaTable table)
	: id_(next_context_id.fetch_add(1)),
	  check_generations_(!(params.flags & MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK)),
	  guarded_(!(params.flags & MRSYNC_CTX_F_TEST_UNGUARDED_PINS)),
	  table_(std::move(table)),
	  /* room for the live limit plus as many retired-but-held regions */
	  slab_(std::make_unique<Region[]>(2 * params.max_regions)),
	  slab_size_(2 * params.max_regions), params_(params), entry_size_(params.entry_size)
{
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
	auto sources = open_sources(kinds, source_config(params));
	if (!sources)
		return std::move(sources).error();
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
	if (sources->size() > kMaxSources)
		return make_error(EINVAL, "params->sources asks for too many sources");
	auto table = VaTable::create();
	if (!table)
		return std::move(table).error();

	std::unique_ptr<Context> ctx(new Context(params, std::move(table.value())));
	ctx->holes_ok_ = (*driver)->caps().holes_ok;
	ctx->driver_ = std::move(driver.value());
	ctx->backings_.emplace(*ctx->driver_);
	ctx->sources_ = std::move(sources.value());
	ctx->nsources_ = static_cast<std::uint32_t>(ctx->sources_.size());
	for (std::uint32_t i = 0; i < ctx->nsources_; ++i) {
		ctx->gen_[i] = ctx->sources_[i]->generation();
		ctx->seen_[i].store(__atomic_load_n(ctx->gen_[i], __ATOMIC_ACQUIRE));
	}
	fork_guard_add(ctx.get());
	return ctx;
}

Context::~Context()
{
	fork_guard_remove(this);
	std::lock_guard guard(lock_);
	if (forked_) { /* a fork child that never rebuilt: nothing here is ours */
		driver_->abandon();
		backings_->abandon();
	}
	for (std::uint32_t i = 0; i < slab_size_; ++i)
		if (slab_[i].state != Region::State::free)
			free_region_locked(slab_[i]);
	if (!forked_)
		(void)driver_->fence();
	backings_.reset(); /* unpins what is left, before the driver goes */
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
	std::uint64_t sum = __atomic_load_n(&fork_base_, __ATOMIC_ACQUIRE);
	for (std::uint32_t i = 0; i < nsources_; ++i)
		sum += __atomic_load_n(gen_[i], __ATOMIC_ACQUIRE);
	return sum;
}

int Context::generation_words(const std::uint64_t **words, int max) const noexcept
{
	int n = 0;
	for (std::uint32_t i = 0; i < nsources_ && n < max; ++i)
		words[n++] = gen_[i];
	if (__atomic_load_n(&fork_base_, __ATOMIC_ACQUIRE) && n < max)
		words[n++] = &fork_base_;
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
	for (std::uint32_t i = 0; i < nsources_; ++i)
		if (__atomic_load_n(gen_[i], __ATOMIC_ACQUIRE) !=
		    seen_[i].load(std::memory_order_relaxed))
			return true;
	return false;
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

std::vector<Region *> Context::overlapping_locked(std::uint64_t start, std::uint64_t end)
{
	std::vector<Region *> found;
	const std::uint64_t from = start > max_region_size_ ? start - max_region_size_ : 0;
	for (auto it = index_.lower_bound({from, 0}); it != index_.end() && it->first.first < end;
	     ++it)
		if (it->second->end_va() > start)
			found.push_back(it->second);
	return found;
}

Region *Context::find_locked(std::uint64_t addr, std::uint64_t len, std::uint32_t access)
{
	for (Region *r : overlapping_locked(addr, addr + len))
		if (r->state == Region::State::live && r->begin_va() <= addr &&
		    addr + len <= r->end_va() && !(access & ~r->access.load()))
			return r;
	return nullptr;
}

Result<std::vector<std::uint64_t>> Context::watch_locked(std::uint64_t start, std::uint64_t size)
{
	/* A source that cannot see every change of the range says so (ENOTSUP,
	 * with its reason); the range is served as long as one source can.
	 * Memory nobody can see is refused: serving it would be a lost write
	 * waiting for the first change nobody reports. */
	std::vector<std::uint64_t> handles(sources_.size(), 0);
	std::string reasons;
	std::optional<Error> first;
	bool seen = false;
	for (std::size_t i = 0; i < sources_.size(); ++i) {
		auto handle = sources_[i]->watch(start, size);
		if (handle) {
			handles[i] = *handle;
			seen = true;
			continue;
		}
		if (handle.error().code != ENOTSUP && !first)
			first = handle.error();
		reasons += (reasons.empty() ? "" : "; ") + handle.error().message;
	}
	if (seen)
		return handles;
	if (first) /* not mapped, memlock...: more telling than "unwatchable" */
		return std::move(*first);
	return make_error(ENOTSUP, fmt("no event source of this context can see every change of "
				       "[0x%" PRIx64 ", +0x%" PRIx64 "), so it is not registered: %s",
				       start, size, reasons.c_str()));
}

void Context::unwatch_locked(std::span<const std::uint64_t> handles) noexcept
{
	for (std::size_t i = 0; i < handles.size() && i < sources_.size(); ++i)
		if (handles[i])
			sources_[i]->unwatch(handles[i]);
}

namespace {

/* Whether all of `range` is mapped read-write now (/proc/self/maps: slow,
 * only for the pages a hint skips). */
bool mapped_read_write(Range range)
{
	std::uint64_t at = range.start;
	for (const Range &part : mapped_writable(range.start, range.end)) {
		if (part.start > at)
			break;
		at = part.end;
	}
	return at >= range.end;
}

Error not_mapped(std::uint64_t addr, std::uint64_t len)
{
	return Error{EFAULT, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
				 ") is not mapped, or not entirely",
				 addr, len)};
}

} // namespace

std::vector<Range> Context::unsettled_locked(std::uint64_t start, std::uint64_t end) const
{
	if (!guarded_)
		return {};
	return unsettled_.intersect({start, end});
}

Result<std::vector<Extent>> Context::pin_except_locked(std::uint64_t start, std::uint64_t size,
						       std::span<const Range> skip)
{
	std::vector<Extent> extents;
	std::uint64_t at = start;
	auto pin_to = [&](std::uint64_t end) -> Status {
		if (at >= end)
			return {};
		auto part = backings_->pin(start, at, end - at, Backings::Holes::fail);
		if (!part)
			return std::move(part).error();
		extents.insert(extents.end(), part->begin(), part->end());
		return {};
	};
	for (const Range &s : skip) {
		if (auto ok = pin_to(s.start); !ok)
			return std::move(ok).error();
		extents.push_back({s.start - start, s.end - s.start, kNoBacking});
		at = s.end;
	}
	if (auto ok = pin_to(start + size); !ok)
		return std::move(ok).error();
	return extents;
}

void Context::claim_table_locked(Region &r, std::uint64_t from, std::uint64_t to)
{
	/* The registration takes the slots of its valid pages in [from, to);
	 * an invalid page -- a hole inside an entry larger than a page, too --
	 * keeps no slot, so its lookups go to the slow path and fail there. */
	const std::uint64_t base = r.begin_va();
	for (const Extent &e : r.translation->extents()) {
		const std::uint64_t s = std::max(from, base + e.offset);
		const std::uint64_t t = std::min(to, base + e.offset + e.length);
		if (e.backing == kNoBacking || s >= t)
			continue;
		if (auto ok = table_.assign(s, t, &r); !ok)
			MRSYNC_LOG(warning, "core", "region stays out of the page table: %s",
				   ok.error().message.c_str());
	}
}

Result<Region *> Context::create_region_locked(std::uint64_t addr, std::uint64_t len,
					       std::uint32_t access, Want want)
{
	const std::uint64_t start = align_down(addr, entry_size_);
	const std::uint64_t size = align_up(addr + len, entry_size_) - start;
	if (auto ok = make_room_locked(size); !ok)
		return std::move(ok).error();
	Region &r = slab_[free_slots_.back()];

	/* Watch before pinning: a change between the two is then reported, and
	 * watch() returns once no change of the range is in progress (the
	 * sequence-then-retry idiom of mmu_interval_notifier; the retry is the
	 * generation check of the caller). */
	auto watches = watch_locked(start, size);
	if (!watches)
		return std::move(watches).error();
	std::vector<Range> skip;
	if (want == Want::hint && guarded_)
		skip = unsettled_locked(start, start + size);
	for (const Range &s : skip)
		if (!mapped_read_write(s)) {
			unwatch_locked(*watches);
			return not_mapped(addr, len);
		}
	auto extents = pin_except_locked(start, size, skip);
	Keys keys;
	if (extents) {
		Translation t(size);
		t.replace(0, size, *extents, [](BackingId, std::uint64_t) {});
		if (auto k = driver_->create(start, size, access, t.extents()); k) {
			keys = *k;
			r.translation.emplace(std::move(t));
		} else {
			extents = std::move(k).error();
		}
	}
	if (!extents) {
		unwatch_locked(*watches);
		(void)fence_and_release_locked(); /* nothing maps what we pinned */
		if (extents.error().code == EFAULT)
			return make_error(EFAULT, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
						      ") is not mapped, or not entirely (%s)",
						      addr, len, extents.error().message.c_str()));
		return std::move(extents).error();
	}
	for (const auto &e : *extents)
		if (e.backing != kNoBacking)
			backings_->use(e.backing, e.length);

	free_slots_.pop_back();
	r.watches = std::move(*watches);
	r.state = Region::State::live;
	r.start.store(start, std::memory_order_relaxed);
	r.size.store(size, std::memory_order_relaxed);
	r.access.store(access, std::memory_order_relaxed);
	r.keys.store(pack_keys(keys), std::memory_order_relaxed);
	r.has_invalid.store(r.translation->invalid_bytes() != 0, std::memory_order_relaxed);
	r.referenced.store(1, std::memory_order_relaxed);
	index_.emplace(std::pair{start, r.slot}, &r);
	max_region_size_ = std::max(max_region_size_, size);
	++live_regions_;
	registered_bytes_ += size;
	++stats_.registrations;
	if (holes_ok_ || !r.translation->invalid_bytes())
		claim_table_locked(r, start, start + size);
	return &r;
}

Status Context::repin_invalid_locked(Region &r, std::uint64_t addr, std::uint64_t len)
{
	const std::uint64_t start = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_) - start;
	const std::uint64_t to = align_up(addr + len, entry_size_) - start;
	const auto runs = r.translation->invalid_runs(from, to - from);
	if (runs.empty())
		return {};
	Status repinned = repin_locked(r, runs);
	if (r.state != Region::State::live || !r.translation->invalid_runs(addr - start, len).empty()) {
		if (!repinned)
			return repinned;
		return make_error(EFAULT, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") is not mapped, or not entirely",
					      addr, len));
	}
	return {};
}

/* A hint re-pins the invalid pages of its range, but none whose change may
 * still be in progress (unsettled_); it still says, as a lookup would, when
 * part of its range is not mapped (read-write) now. */
Status Context::hint_locked(Region &r, std::uint64_t addr, std::uint64_t len)
{
	const std::uint64_t base = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_), to = align_up(addr + len, entry_size_);
	if (holes_ok_ && r.translation->invalid_bytes() != 0) {
		std::vector<Range> invalid;
		for (const Range &run : r.translation->invalid_runs(from - base, to - from))
			invalid.push_back({base + run.start, base + run.end});
		std::vector<Range> settled;
		for (const Range &run : subtract(invalid, unsettled_locked(from, to)))
			settled.push_back({run.start - base, run.end - base});
		if (!settled.empty())
			(void)repin_locked(r, settled);
		if (r.state != Region::State::live)
			return {};
	}
	for (const Range &run : r.translation->invalid_runs(addr - base, len))
		if (!mapped_read_write({base + run.start, base + run.end}))
			return not_mapped(addr, len);
	return {};
}

/* What a lookup or hint may re-pin in a registration that covers it.
 * @return ESTALE when `r` was retired to make way for a new registration. */
Status Context::serve_locked(Region &r, std::uint64_t addr, std::uint64_t len, Want want)
{
	if (want == Want::hint && guarded_)
		return hint_locked(r, addr, len);
	if (holes_ok_)
		return repin_invalid_locked(r, addr, len);
	/* The driver serves a registration only without holes (one MR covers
	 * it): all of them are re-pinned -- unless some outside the request may
	 * still be changing (unsettled_), which only a lookup that needs them
	 * may pin -- or unless some stay unmapped: then a new registration
	 * covers just the request. */
	const std::uint64_t base = r.begin_va();
	const std::uint64_t from = align_down(addr, entry_size_), to = align_up(addr + len, entry_size_);
	const auto retired = [&] {
		retire_locked(r);
		return make_error(ESTALE, "registration retired");
	};
	if (r.translation->invalid_bytes() != 0 &&
	    (!unsettled_locked(base, from).empty() || !unsettled_locked(to, r.end_va()).empty()))
		return retired();
	if (auto ok = repin_invalid_locked(r, base, r.size.load()); !ok) {
		if (r.state == Region::State::live &&
		    !r.translation->invalid_runs(addr - base, len).empty())
			return ok;
		return retired();
	}
	return {};
}

Status Context::slow_path(std::uint64_t addr, std::uint64_t len, std::uint32_t access, Want want,
			  mrsync_reg *out)
{
	if (auto ok = validate_request(addr, len, access); !ok)
		return ok;
	std::lock_guard guard(lock_);
	++stats_.misses;
	ThreadState &ts = thread_state_locked();
	for (;;) {
		if (forked_)
			if (auto ok = rebuild_after_fork_locked(); !ok)
				return ok;
		if (check_generations_ && generations_moved())
			if (auto ok = resync_locked(); !ok)
				return ok;
		Region *r = find_locked(addr, len, access);
		if (!r) {
			auto created = create_region_locked(addr, len, access, want);
			if (!created)
				return std::move(created).error();
			r = *created;
		} else if (auto ok = serve_locked(*r, addr, len, want); !ok) {
			if (ok.error().code == ESTALE)
				continue;
			return ok;
		}
		/* Events that arrived while we pinned: apply them first, so what
		 * we hand out is current when we return. */
		if (check_generations_ && generations_moved())
			continue;
		claim_table_locked(*r, align_down(addr, entry_size_),
				   align_up(addr + len, entry_size_));
		if (want == Want::hint)
			return {};
		/* A lookup pinned these pages after every change reported so far:
		 * whatever was in progress there is its business now. */
		unsettled_.remove({align_down(addr, entry_size_), align_up(addr + len, entry_size_)});
		ThreadState::bump(ts.holds[r->slot], 1);
		r->referenced.store(1, std::memory_order_relaxed);
		const Keys keys = r->current_keys();
		*out = {r->begin_va(), r->size.load(), keys.lkey, keys.rkey,
			reinterpret_cast<mrsync_region *>(r)};
		return {};
	}
}

Status Context::get_slow(std::uint64_t addr, std::uint64_t len, std::uint32_t access,
			 mrsync_reg &out)
{
	return slow_path(addr, len, access, Want::lookup, &out);
}

Status Context::put(mrsync_region *handle)
{
	const Region *r = owned_region(handle);
	if (!r)
		return make_error(EINVAL, "reg->region was not handed out by this context");
	ThreadState *ts = tls_slots[0].ctx_id == id_ ? tls_slots[0].state : nullptr;
	if (!ts) {
		std::lock_guard guard(lock_);
		ts = &thread_state_locked();
	}
	ThreadState::bump(ts->holds[r->slot], -1);
	return {};
}

Status Context::hint(std::uint64_t addr, std::uint64_t len, std::uint32_t access)
{
	return slow_path(addr, len, access, Want::hint, nullptr);
}

Status Context::notify_unmap(std::uint64_t addr, std::uint64_t len)
{
	if (!addr || !len || addr + len < addr)
		return make_error(EINVAL, fmt("[addr, addr + len) = [0x%" PRIx64 ", +0x%" PRIx64
					      ") is empty, NULL or wraps",
					      addr, len));
	for (auto &source : sources_)
		if (auto ok = source->notify({addr, addr + len}); ok || ok.error().code != ENOTSUP)
			return ok;
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
