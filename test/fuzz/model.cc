#include "model.hpp"

#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mrsync::fuzz {

namespace {

constexpr std::uint32_t kDefaultMaxRegions = 4096; /* mrsync.h: "0 = 4096" */

std::string vformat(const char *fmt, va_list ap)
{
	char line[1024];
	std::vsnprintf(line, sizeof(line), fmt, ap);
	return line;
}

std::uint64_t align_down(std::uint64_t v, std::uint64_t a) { return v & ~(a - 1); }
std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

struct RegionSums {
	Model *model;
	const Arena *arena;
	bool pending;
	std::uint64_t count = 0, bytes = 0, invalid = 0;
};

void visit_region(void *arg, const mrsync_region_info *info)
{
	auto &sums = *static_cast<RegionSums *>(arg);
	++sums.count;
	sums.bytes += info->length;
	sums.invalid += info->invalid_bytes;
	if (info->length == 0 || info->invalid_bytes > info->length)
		sums.model->fail("region [%#" PRIx64 ", +%#" PRIx64 ") reports %" PRIu64
				 " invalid bytes", info->addr, info->length, info->invalid_bytes);
	if (info->access & ~std::uint32_t(MRSYNC_ACCESS_ALL))
		sums.model->fail("region [%#" PRIx64 ", +%#" PRIx64 ") reports access %#x",
				 info->addr, info->length, info->access);
	if (info->addr < sums.arena->begin() || info->addr + info->length > sums.arena->end())
		sums.model->fail("region [%#" PRIx64 ", +%#" PRIx64 ") lies outside the arena, "
				 "where no lookup was made", info->addr, info->length);
	/* Once every change is applied, a page the model says is a guard has no
	 * valid translation in any registration: counting it as valid is what a
	 * stale translation looks like from outside. */
	const std::uint64_t guards = sums.arena->guard_pages(info->addr, info->length) * kPage;
	if (!sums.pending && info->invalid_bytes < guards)
		sums.model->fail("region [%#" PRIx64 ", +%#" PRIx64 ") covers %" PRIu64 " unmapped "
				 "bytes after a resync but reports only %" PRIu64 " invalid: it "
				 "still translates unmapped pages", info->addr, info->length,
				 guards, info->invalid_bytes);
}

} // namespace

Model::Model(Arena &arena, const mrsync_params &params)
	: arena_(arena), max_regions_(params.max_regions ? params.max_regions : kDefaultMaxRegions),
	  max_bytes_(params.max_registered_bytes),
	  entry_(params.entry_size ? params.entry_size : kPage),
	  /* mrsync.h: -ENOMEM is RLIMIT_MEMLOCK, which does not bind root */
	  may_hit_memlock_(geteuid() != 0)
{
}

void Model::trace(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	trace_ += vformat(fmt, ap);
	va_end(ap);
	trace_ += '\n';
}

void Model::print_trace() const
{
	std::fprintf(stderr, "mrsync-fuzz: operations (arena at %#" PRIx64 "):\n%s", arena_.begin(),
		     trace_.c_str());
}

void Model::fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	const std::string what = vformat(fmt, ap);
	va_end(ap);
	print_trace();
	std::fprintf(stderr, "mrsync-fuzz: MODEL VIOLATION: %s\nmrsync-fuzz: last error: %s\n",
		     what.c_str(), mrsync_last_error());
	std::abort();
}

Model::Expect Model::expect(std::uint64_t addr, std::uint64_t len, std::uint32_t access) const
{
	/* mrsync.h, mrsync_get: -EINVAL for a NULL, zero-length or wrapping
	 * range or unknown access bits; -EFAULT when part of it is not mapped. */
	if (!addr || !len || addr + len < addr || (access & ~std::uint32_t(MRSYNC_ACCESS_ALL)))
		return Expect::einval;
	if (!arena_.rw_bytes(addr, len))
		return Expect::efault;
	/* A registration covers whole translation entries (params.entry_size).
	 * Whether a request whose own pages are mapped, in an entry that is
	 * not entirely mapped, is served is not documented: either answer. */
	const std::uint64_t from = align_down(addr, entry_), to = align_up(addr + len, entry_);
	if (!arena_.rw_bytes(from, to - from))
		return Expect::ok_or_efault;
	return Expect::ok;
}

bool Model::enospc_allowed(std::uint64_t addr, std::uint64_t len) const
{
	/* mrsync.h: -ENOSPC when the limits are reached and every registration
	 * is in use. Nothing held: nothing is in use, unless this request alone
	 * is larger than max_registered_bytes. */
	const std::uint64_t size = align_up(addr + len, entry_) - align_down(addr, entry_);
	return !held_.empty() || (max_bytes_ && size > max_bytes_);
}

void Model::check_lookup(const char *call, int rc, std::uint64_t addr, std::uint64_t len,
			 std::uint32_t access, const mrsync_reg *reg)
{
	++lookups_;
	const Expect e = expect(addr, len, access);
	const bool ok_expected = e == Expect::ok || e == Expect::ok_or_efault;
	bool allowed = false;
	switch (rc) {
	case 0:
		allowed = ok_expected;
		break;
	case -EINVAL:
		allowed = e == Expect::einval;
		break;
	case -EFAULT:
		allowed = e == Expect::efault || e == Expect::ok_or_efault;
		break;
	/* Which of two errors wins when both apply is not documented. */
	case -ENOSPC:
		allowed = e != Expect::einval && enospc_allowed(addr, len);
		break;
	case -ENOMEM:
		allowed = e != Expect::einval && may_hit_memlock_;
		break;
	}
	if (!allowed) {
		static const char *const names[] = {"-EINVAL", "-EFAULT", "0", "0 or -EFAULT"};
		fail("%s([%#" PRIx64 ", +%#" PRIx64 "), access %#x) returned %d (%s), the model "
		     "expects %s (%zu registrations held)", call, addr, len, access, rc,
		     rc < 0 ? std::strerror(-rc) : "a registration", names[int(e)], held_.size());
	}
	if (rc != 0)
		return;
	++lookups_ok_;
	pending_ = false; /* mrsync.h: a lookup resyncs first when a source moved */
	if (!reg)
		return;
	if (!reg->region)
		fail("%s returned 0 with reg.region NULL", call);
	if (reg->addr > addr || reg->addr + reg->length < addr + len || reg->length == 0)
		fail("%s([%#" PRIx64 ", +%#" PRIx64 ")) returned [%#" PRIx64 ", +%#" PRIx64 "), "
		     "which does not cover the request", call, addr, len, reg->addr, reg->length);
	/* uring.hpp, Hca::create: lkey == rkey, never 0 */
	if (reg->lkey == 0 || reg->lkey != reg->rkey)
		fail("%s returned lkey %#x rkey %#x (uring: equal, never 0)", call, reg->lkey,
		     reg->rkey);
}

void Model::check_einval(const char *call, int rc)
{
	if (rc != -EINVAL)
		fail("%s returned %d, expected -EINVAL", call, rc);
}

void Model::check_notify(mrsync_ctx *ctx, int rc, std::uint64_t gen_before)
{
	if (rc != 0)
		fail("mrsync_notify_unmap returned %d on a valid range of a manual-source context",
		     rc);
	++notifies_;
	pending_ = true;
	/* mrsync.h, mrsync_generation: it changes whenever a source reports one */
	if (mrsync_generation(ctx) == gen_before)
		fail("mrsync_generation() is still %" PRIu64 " after a notification", gen_before);
}

void Model::check_resync(int rc)
{
	if (rc != 0)
		fail("mrsync_resync returned %d", rc);
	pending_ = false;
}

void Model::check_state(mrsync_ctx *ctx)
{
	const std::uint64_t gen = mrsync_generation(ctx);
	if (gen < generation_)
		fail("mrsync_generation() went back from %" PRIu64 " to %" PRIu64, generation_, gen);
	generation_ = gen;
	/* mrsync.h, mrsync_generation_words: the words mrsync_generation() sums
	 * (single-threaded here: nothing moves them meanwhile) */
	const std::uint64_t *words[4];
	const int n_words = mrsync_generation_words(ctx, words, 4);
	std::uint64_t sum = 0;
	for (int i = 0; i < n_words; ++i)
		sum += __atomic_load_n(words[i], __ATOMIC_ACQUIRE);
	if (n_words < 1 || sum != gen)
		fail("mrsync_generation_words gave %d words summing to %" PRIu64 ", "
		     "mrsync_generation() %" PRIu64, n_words, sum, gen);

	mrsync_stats s{};
	if (int rc = mrsync_get_stats(ctx, &s, sizeof s); rc != 0)
		fail("mrsync_get_stats returned %d", rc);
	/* Counters of events never go back. */
	const std::uint64_t mrsync_stats::*const counters[] = {
		&mrsync_stats::hits, &mrsync_stats::misses, &mrsync_stats::resyncs,
		&mrsync_stats::full_resyncs, &mrsync_stats::events, &mrsync_stats::entries_repinned,
		&mrsync_stats::bytes_repinned, &mrsync_stats::entries_invalidated,
		&mrsync_stats::registrations, &mrsync_stats::evictions, &mrsync_stats::compactions,
		&mrsync_stats::key_changes};
	for (auto field : counters)
		if (s.*field < last_.*field)
			fail("a stats counter went back from %" PRIu64 " to %" PRIu64
			     " (field at offset %zu)", last_.*field, s.*field,
			     std::size_t(reinterpret_cast<const char *>(&(s.*field)) -
					 reinterpret_cast<const char *>(&s)));
	if (s.regions > max_regions_)
		fail("stats.regions %" PRIu64 " exceeds max_regions %u", s.regions, max_regions_);
	if (max_bytes_ && s.registered_bytes > max_bytes_)
		fail("stats.registered_bytes %" PRIu64 " exceeds max_registered_bytes %" PRIu64,
		     s.registered_bytes, max_bytes_);
	if (s.registrations < s.regions)
		fail("%" PRIu64 " live registrations but only %" PRIu64 " ever created", s.regions,
		     s.registrations);
	if (s.invalid_bytes > s.registered_bytes)
		fail("stats.invalid_bytes %" PRIu64 " > registered_bytes %" PRIu64, s.invalid_bytes,
		     s.registered_bytes);
	if (s.stale_pinned_bytes > s.pinned_bytes)
		fail("stats.stale_pinned_bytes %" PRIu64 " > pinned_bytes %" PRIu64,
		     s.stale_pinned_bytes, s.pinned_bytes);
	if (s.hits + s.misses > lookups_ || s.hits + s.misses < lookups_ok_)
		fail("hits %" PRIu64 " + misses %" PRIu64 " outside [%" PRIu64 " successful, %" PRIu64
		     " made] lookups", s.hits, s.misses, lookups_ok_, lookups_);
	if (s.events > notifies_)
		fail("stats.events %" PRIu64 " > %" PRIu64 " notifications made", s.events, notifies_);
	/* uring.hpp, caps(): keys survive map() */
	if (s.key_changes)
		fail("stats.key_changes %" PRIu64 " on the uring driver", s.key_changes);
	last_ = s;

	RegionSums sums{this, &arena_, pending_};
	const int n = mrsync_for_each_region(ctx, visit_region, &sums);
	if (n < 0 || std::uint64_t(n) != sums.count)
		fail("mrsync_for_each_region returned %d after %" PRIu64 " calls", n, sums.count);
	if (sums.count != s.regions || sums.bytes != s.registered_bytes ||
	    sums.invalid != s.invalid_bytes)
		fail("mrsync_for_each_region reports %" PRIu64 " registrations, %" PRIu64 " bytes, %"
		     PRIu64 " invalid; stats say %" PRIu64 ", %" PRIu64 ", %" PRIu64, sums.count,
		     sums.bytes, sums.invalid, s.regions, s.registered_bytes, s.invalid_bytes);
}

void Model::changed(std::uint64_t addr, std::uint64_t len)
{
	for (std::uint64_t e = align_down(addr, entry_); e < addr + len; e += entry_)
		changed_entries_.insert(e);
}

} // namespace mrsync::fuzz
