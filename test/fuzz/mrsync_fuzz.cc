// libFuzzer target: the C ABI (mrsync.h) against a model of the address space.
//
// An input is a 4-byte header (the context's limits) and then operations, one
// opcode byte and its argument bytes each: lookups (get, get-and-hold, hint),
// puts, spurious notifications, resyncs, compactions, bad arguments, CPU
// writes, DMA through held keys, and changes of the arena's address space
// (mmap MAP_FIXED, munmap, mremap away or to another place, MADV_DONTNEED),
// each followed by mrsync_notify_unmap() as the manual source requires.
// Every answer is checked by the model (model.hpp); every successful lookup
// is followed by a DMA write and read through the uring software HCA, whose
// bytes the CPU must see. Set MRSYNC_FUZZ_NEGATIVE=1 to run against a naive
// cache (MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK): the model must then catch a
// stale translation within seconds. test/fuzz/README.md has the details.
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <mrsync/mrsync.hpp>
#include <mrsync/uring.hpp>

#include "arena.hpp"
#include "input.hpp"
#include "model.hpp"

namespace mrsync::fuzz {

namespace {

/* Bounds the time one input may take. */
constexpr unsigned kMaxOps = 256;
constexpr std::size_t kMaxHeld = 32;
constexpr std::uint32_t kWriteAccess = MRSYNC_ACCESS_LOCAL_WRITE | MRSYNC_ACCESS_REMOTE_WRITE;

bool negative_run = false;
bool print_traces = false;

enum Op : unsigned {
	op_get,           /* get, DMA write + read, put */
	op_get_hold,      /* the same, kept held */
	op_put,           /* put a held registration */
	op_hint,          /* hint, then a get inside it must hit */
	op_notify,        /* a spurious notification */
	op_resync,
	op_compact,
	op_map_fresh,     /* mmap(MAP_FIXED) */
	op_unmap,         /* munmap (+ a PROT_NONE guard) */
	op_move,          /* mremap to another place of the arena */
	op_away_and_back, /* mremap away and back: the same pages return */
	op_drop,          /* madvise(MADV_DONTNEED) */
	op_cpu_write,
	op_dma_held,      /* DMA through a held registration */
	op_bad_args,
	op_count,
};

struct Request {
	std::uint64_t addr, len;
};

/* A byte range inside the arena: a first page, up to 8 pages, and how much
 * of the first and last page to leave out. */
Request decode_range(Input &in, const Arena &arena)
{
	const std::size_t page = in.below(kArenaPages);
	const std::size_t pages = std::min<std::size_t>(1 + in.below(8), kArenaPages - page);
	const std::uint64_t head = in.byte() * 16ull, tail = in.byte() * 16ull;
	const std::uint64_t addr = arena.addr(page) + head;
	std::uint64_t end = arena.addr(page + pages) - tail;
	if (end <= addr)
		end = addr + 1;
	return {addr, end - addr};
}

/* Non-zero bytes (fresh pages read zero), different for every write. */
std::vector<std::byte> pattern(std::uint64_t len, std::uint64_t seed)
{
	std::vector<std::byte> bytes(len);
	std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (auto &b : bytes) {
		x ^= x >> 29;
		x *= 0xbf58476d1ce4e5b9ull;
		b = std::byte((x >> 32) | 1);
	}
	return bytes;
}

std::span<const std::uint8_t> as_u8(const std::vector<std::byte> &v)
{
	return {reinterpret_cast<const std::uint8_t *>(v.data()), v.size()};
}

class Run {
public:
	Run(Arena &arena, mrsync_ctx *ctx, const mrsync_params &params)
		: arena_(arena), ctx_(ctx), model_(arena, params),
		  hca_(dynamic_cast<uring::Hca &>(driver_of(ctx)))
	{
	}

	void step(Input &in);
	void finish();

	Model &model() { return model_; }

private:
	void lookup(Input &in, bool hold);
	void hint(Input &in);
	void notify(std::uint64_t addr, std::uint64_t len);
	void change(Input &in, unsigned op);
	void dma_held(Input &in);
	void bad_args(Input &in);
	void put(std::size_t index);

	enum class Dir { write, read };
	/** One DMA request, waited for: the answer (bytes moved or -errno). */
	int dma(Dir dir, std::uint32_t lkey, std::uint64_t va, std::vector<std::byte> &bytes);
	/** A write the device accepted: the CPU must see exactly it, and
	 *  nothing else in the arena may have changed. */
	void check_landed(const char *what, std::uint64_t va, const std::vector<std::byte> &bytes);
	/** A fresh registration: DMA must land and read back what the CPU sees. */
	void check_dma(const mrsync_reg &reg, std::uint64_t addr, std::uint64_t len,
		       std::uint32_t access);

	Arena &arena_;
	mrsync_ctx *ctx_;
	Model model_;
	uring::Hca &hca_;
	std::uint64_t seq_ = 0;
};

int Run::dma(Dir dir, std::uint32_t lkey, std::uint64_t va, std::vector<std::byte> &bytes)
{
	const std::uint64_t tag = ++seq_;
	auto ok = dir == Dir::write ? hca_.write(lkey, va, bytes, tag)
				    : hca_.read(lkey, va, bytes, tag);
	if (!ok)
		model_.fail("Hca::%s could not submit: %s", dir == Dir::write ? "write" : "read",
			    ok.error().message.c_str());
	auto done = hca_.wait(tag);
	if (!done)
		model_.fail("Hca::wait: %s", done.error().message.c_str());
	return done->result;
}

void Run::check_landed(const char *what, std::uint64_t va, const std::vector<std::byte> &bytes)
{
	if (std::memcmp(reinterpret_cast<const void *>(va), bytes.data(), bytes.size()) != 0)
		model_.fail("%s: the device accepted a %zu-byte write at %#" PRIx64 " that the CPU "
			    "does not see: a stale translation (lost write)", what, bytes.size(), va);
	arena_.record(va, as_u8(bytes));
	if (auto at = arena_.first_difference())
		model_.fail("%s: after a DMA write at %#" PRIx64 ", page %#" PRIx64 " no longer "
			    "holds what the CPU wrote there: the write landed in the wrong place",
			    what, va, *at);
}

void Run::check_dma(const mrsync_reg &reg, std::uint64_t addr, std::uint64_t len,
		    std::uint32_t access)
{
	/* mrsync.h: the registration (keys, translation of the range) stays
	 * valid until mrsync_put(): DMA inside the range must succeed. */
	if (access & kWriteAccess) {
		auto bytes = pattern(len, seq_ + 1);
		const int rc = dma(Dir::write, reg.lkey, addr, bytes);
		if (rc != int(len))
			model_.fail("DMA write of %" PRIu64 " bytes at %#" PRIx64 " through a fresh "
				    "lkey %#x answered %d", len, addr, reg.lkey, rc);
		check_landed("fresh registration", addr, bytes);
	}
	std::vector<std::byte> back(len);
	const int rc = dma(Dir::read, reg.lkey, addr, back);
	if (rc != int(len))
		model_.fail("DMA read of %" PRIu64 " bytes at %#" PRIx64 " through a fresh lkey %#x "
			    "answered %d", len, addr, reg.lkey, rc);
	if (std::memcmp(back.data(), arena_.shadow(addr), len) != 0)
		model_.fail("DMA read at %#" PRIx64 " through a fresh lkey returned bytes the CPU "
			    "does not see: a stale translation", addr);
}

void Run::put(std::size_t index)
{
	auto &held = model_.held();
	Held h = held[index];
	held.erase(held.begin() + std::ptrdiff_t(index));
	model_.trace("  put [%#" PRIx64 ", +%#" PRIx64 ")", h.addr, h.len);
	/* mrsync.h: put of a handle from mrsync_get() returns 0 */
	if (int rc = mrsync_put(ctx_, &h.reg); rc != 0)
		model_.fail("mrsync_put of a held registration returned %d", rc);
}

void Run::lookup(Input &in, bool hold)
{
	const Request r = decode_range(in, arena_);
	const std::uint32_t access = in.below(8);
	mrsync_reg reg{};
	const int rc = mrsync_get(ctx_, reinterpret_cast<const void *>(r.addr), r.len, access, &reg);
	model_.trace("get%s [%#" PRIx64 ", +%#" PRIx64 ") access %#x -> %d lkey %#x",
		     hold ? "+hold" : "", r.addr, r.len, access, rc, reg.lkey);
	model_.check_lookup("mrsync_get", rc, r.addr, r.len, access, &reg);
	if (rc != 0)
		return;
	check_dma(reg, r.addr, r.len, access);
	if (!hold) {
		if (int put = mrsync_put(ctx_, &reg); put != 0)
			model_.fail("mrsync_put of a fresh registration returned %d", put);
		return;
	}
	auto &held = model_.held();
	held.push_back({reg, r.addr, r.len, access});
	if (held.size() > kMaxHeld)
		put(0);
}

void Run::hint(Input &in)
{
	const Request r = decode_range(in, arena_);
	const std::uint32_t access = in.below(8);
	const int rc = mrsync_hint(ctx_, reinterpret_cast<const void *>(r.addr), r.len, access);
	model_.trace("hint [%#" PRIx64 ", +%#" PRIx64 ") access %#x -> %d", r.addr, r.len, access,
		     rc);
	model_.check_lookup("mrsync_hint", rc, r.addr, r.len, access, nullptr);
	if (rc != 0)
		return;
	/* mrsync.h, mrsync_hint: later gets anywhere inside it hit, but for
	 * pages that changed and no get has pinned since (Model::ever_changed). */
	mrsync_stats before{}, after{};
	mrsync_get_stats(ctx_, &before, sizeof before);
	mrsync_reg reg{};
	const std::uint64_t at = r.addr + (r.len - 1) / 2;
	const int got = mrsync_get(ctx_, reinterpret_cast<const void *>(at), 1, access, &reg);
	mrsync_get_stats(ctx_, &after, sizeof after);
	/* A full resync (ring overflow) changed every page as far as the cache
	 * knows. */
	const bool changed = model_.ever_changed(at) || after.full_resyncs != 0;
	model_.trace("  get [%#" PRIx64 ", +1) inside it -> %d%s", at, got,
		     changed ? " (a changed page: may miss)" : "");
	model_.check_lookup("mrsync_get after mrsync_hint", got, at, 1, access, &reg);
	if (!changed && (after.hits != before.hits + 1 || after.misses != before.misses))
		model_.fail("a get inside a fresh hint did not hit (hits %" PRIu64 " -> %" PRIu64
			    ", misses %" PRIu64 " -> %" PRIu64 ")", before.hits, after.hits,
			    before.misses, after.misses);
	check_dma(reg, at, 1, access);
	if (int put = mrsync_put(ctx_, &reg); put != 0)
		model_.fail("mrsync_put returned %d", put);
}

void Run::notify(std::uint64_t addr, std::uint64_t len)
{
	const std::uint64_t gen = mrsync_generation(ctx_);
	const int rc = mrsync_notify_unmap(ctx_, reinterpret_cast<const void *>(addr), len);
	model_.trace("  notify [%#" PRIx64 ", +%#" PRIx64 ") -> %d", addr, len, rc);
	model_.check_notify(ctx_, rc, gen);
	if (rc == 0)
		model_.changed(addr, len);
}

void Run::change(Input &in, unsigned op)
{
	const std::size_t first = in.below(kArenaPages);
	const std::size_t count = std::min<std::size_t>(1 + in.below(8), kArenaPages - first);
	static const char *const names[] = {"mmap(MAP_FIXED)", "munmap", "mremap",
					    "mremap away and back", "madvise(MADV_DONTNEED)"};
	const char *name = names[op - op_map_fresh];
	switch (op) {
	case op_map_fresh:
		arena_.map_fresh(first, count);
		break;
	case op_unmap:
		arena_.unmap(first, count);
		break;
	case op_move: {
		const std::size_t to = in.below(unsigned(kArenaPages - count + 1));
		if (first < to + count && to < first + count)
			return; /* overlapping: not a move mremap allows */
		model_.trace("mremap pages [%zu, +%zu) to page %zu", first, count, to);
		arena_.move(first, count, to);
		notify(arena_.addr(first), count * kPage);
		notify(arena_.addr(to), count * kPage);
		return;
	}
	case op_away_and_back:
		arena_.away_and_back(first, std::min(count, kScratchPages));
		break;
	case op_drop:
		arena_.drop(first, count);
		break;
	}
	model_.trace("%s pages [%zu, +%zu)", name, first, count);
	notify(arena_.addr(first), count * kPage);
}

void Run::dma_held(Input &in)
{
	auto &held = model_.held();
	const unsigned pick = in.byte();
	if (held.empty() || model_.pending())
		return; /* with a change not yet applied, a held key is the program's own race */
	const Held &h = held[pick % held.size()];
	const bool write = h.access & kWriteAccess;
	model_.trace("DMA %s through held lkey %#x [%#" PRIx64 ", +%#" PRIx64 ")",
		     write ? "write" : "read", h.reg.lkey, h.addr, h.len);
	/* The registration is held, so its key is known to the device: the
	 * device may refuse a page not re-pinned since a change (-EFAULT,
	 * uring.hpp), but what it accepts must land where the CPU sees it. */
	const bool mapped = arena_.rw_bytes(h.addr, h.len);
	std::vector<std::byte> bytes = write ? pattern(h.len, seq_ + 1) : std::vector<std::byte>(h.len);
	const int rc = dma(write ? Dir::write : Dir::read, h.reg.lkey, h.addr, bytes);
	model_.trace("  -> %d", rc);
	if (rc == -EFAULT) {
		if (auto at = arena_.first_difference())
			model_.fail("a refused DMA write changed page %#" PRIx64, *at);
		return;
	}
	if (rc != int(h.len))
		model_.fail("DMA through held lkey %#x answered %d (expected %" PRIu64
			    " or -EFAULT)", h.reg.lkey, rc, h.len);
	if (!mapped)
		model_.fail("the device accepted DMA through held lkey %#x into [%#" PRIx64 ", +%#"
			    PRIx64 "), which is not mapped, after the change was applied: a "
			    "stale translation", h.reg.lkey, h.addr, h.len);
	if (write)
		check_landed("held registration", h.addr, bytes);
	else if (std::memcmp(bytes.data(), arena_.shadow(h.addr), h.len) != 0)
		model_.fail("DMA read through held lkey %#x returned bytes the CPU does not see: "
			    "a stale translation", h.reg.lkey);
}

void Run::bad_args(Input &in)
{
	const unsigned what = in.below(7);
	const Request r = decode_range(in, arena_);
	const auto *addr = reinterpret_cast<const void *>(r.addr);
	mrsync_reg reg{};
	model_.trace("bad arguments, kind %u", what);
	switch (what) {
	case 0: /* mrsync.h, mrsync_get: NULL range */
		model_.check_lookup("mrsync_get(NULL)", mrsync_get(ctx_, nullptr, r.len, 0, &reg), 0,
				    r.len, 0, &reg);
		break;
	case 1: /* zero-length */
		model_.check_lookup("mrsync_get(len 0)", mrsync_get(ctx_, addr, 0, 0, &reg), r.addr,
				    0, 0, &reg);
		break;
	case 2: { /* wrapping */
		const std::uint64_t len = ~std::uint64_t(0) - r.len;
		model_.check_lookup("mrsync_get(wrapping)", mrsync_get(ctx_, addr, len, 0, &reg),
				    r.addr, len, 0, &reg);
		break;
	}
	case 3: { /* unknown access bits */
		const std::uint32_t access = (1u << (3 + in.below(29))) | in.below(8);
		model_.check_lookup("mrsync_get(unknown access)",
				    mrsync_get(ctx_, addr, r.len, access, &reg), r.addr, r.len, access,
				    &reg);
		model_.check_lookup("mrsync_hint(unknown access)",
				    mrsync_hint(ctx_, addr, r.len, access), r.addr, r.len, access,
				    nullptr);
		break;
	}
	case 4: /* mrsync_hint: "the errors of mrsync_get()" */
		model_.check_lookup("mrsync_hint(len 0)", mrsync_hint(ctx_, addr, 0, 0), r.addr, 0, 0,
				    nullptr);
		break;
	case 5: /* mrsync_notify_unmap: -EINVAL for a bad range */
		model_.check_einval("mrsync_notify_unmap(len 0)", mrsync_notify_unmap(ctx_, addr, 0));
		model_.check_einval("mrsync_notify_unmap(wrapping)",
				    mrsync_notify_unmap(ctx_, addr, ~std::uint64_t(0) - r.len));
		break;
	case 6: { /* NULL arguments, and a handle this context never handed out */
		int local = 0;
		mrsync_reg bogus{};
		model_.check_einval("mrsync_put(NULL)", mrsync_put(ctx_, nullptr));
		model_.check_einval("mrsync_put(reg.region NULL)", mrsync_put(ctx_, &bogus));
		bogus.region = reinterpret_cast<mrsync_region *>(&local);
		model_.check_einval("mrsync_put(foreign region)", mrsync_put(ctx_, &bogus));
		model_.check_einval("mrsync_get(out NULL)", mrsync_get(ctx_, addr, r.len, 0, nullptr));
		model_.check_einval("mrsync_get(ctx NULL)", mrsync_get(nullptr, addr, r.len, 0, &reg));
		model_.check_einval("mrsync_get_stats(out NULL)", mrsync_get_stats(ctx_, nullptr, sizeof(mrsync_stats)));
		model_.check_einval("mrsync_resync(NULL)", mrsync_resync(nullptr));
		model_.check_einval("mrsync_compact(NULL)", mrsync_compact(nullptr));
		break;
	}
	}
}

void Run::step(Input &in)
{
	const unsigned op = in.below(op_count);
	switch (op) {
	case op_get:
	case op_get_hold:
		lookup(in, op == op_get_hold);
		break;
	case op_put: {
		const unsigned pick = in.byte();
		if (!model_.held().empty())
			put(pick % model_.held().size());
		break;
	}
	case op_hint:
		hint(in);
		break;
	case op_notify: {
		const Request r = decode_range(in, arena_);
		model_.trace("spurious notification");
		notify(r.addr, r.len);
		break;
	}
	case op_resync: {
		const int rc = mrsync_resync(ctx_);
		model_.trace("resync -> %d", rc);
		model_.check_resync(rc);
		break;
	}
	case op_compact: {
		const int rc = mrsync_compact(ctx_);
		model_.trace("compact -> %d", rc);
		if (rc < 0) /* mrsync.h: the number of backings compacted, or -errno */
			model_.fail("mrsync_compact returned %d", rc);
		break;
	}
	case op_cpu_write: {
		const Request r = decode_range(in, arena_);
		model_.trace("CPU write [%#" PRIx64 ", +%#" PRIx64 ")", r.addr, r.len);
		arena_.cpu_write(r.addr, as_u8(pattern(r.len, ++seq_)));
		break;
	}
	case op_dma_held:
		dma_held(in);
		break;
	case op_bad_args:
		bad_args(in);
		break;
	default:
		change(in, op);
		break;
	}
	model_.check_state(ctx_);
}

void Run::finish()
{
	while (!model_.held().empty())
		put(model_.held().size() - 1);
	model_.check_resync(mrsync_resync(ctx_));
	model_.check_state(ctx_);
	if (print_traces)
		model_.print_trace();
}

/* The header: the context's limits, small enough to make eviction, ring
 * overflows and compaction frequent. */
mrsync_params decode_params(Input &in)
{
	mrsync_params p = MRSYNC_PARAMS_INIT;
	p.driver = "uring";
	p.sources = MRSYNC_SOURCE_MANUAL;
	p.max_regions = in.below(9); /* 0: the default */
	static const std::uint32_t rings[] = {0, 1, 2, 8};
	p.ring_entries = rings[in.below(4)];
	const unsigned bytes = in.byte();
	p.max_registered_bytes = bytes % 4 == 3 ? (1 + bytes / 4 % 32) * kPage : 0;
	const unsigned b3 = in.byte();
	static const std::uint64_t thresholds[] = {0, UINT64_MAX, 1};
	p.compact_threshold = thresholds[b3 % 3];
	static const std::uint64_t entries[] = {0, 0, 0, 0, 0, kPage, 2 * kPage, 4 * kPage};
	p.entry_size = entries[(b3 >> 4) % 8];
	if (negative_run)
		p.flags |= MRSYNC_CTX_F_TEST_NO_GENERATION_CHECK;
	return p;
}

} // namespace

} // namespace mrsync::fuzz

using namespace mrsync::fuzz;

/* UBSan findings are crashes, as ASan's are. */
extern "C" const char *__ubsan_default_options()
{
	return "halt_on_error=1:print_stacktrace=1";
}

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
	/* Unmapped pages make the resync warn on every input: keep errors only. */
	setenv("MRSYNC_LOG", "error", 0);
	auto flag = [](const char *name) {
		const char *v = std::getenv(name);
		return v && *v && std::strcmp(v, "0") != 0;
	};
	negative_run = flag("MRSYNC_FUZZ_NEGATIVE");
	print_traces = flag("MRSYNC_FUZZ_TRACE");
	if (negative_run)
		std::fprintf(stderr, "mrsync-fuzz: NEGATIVE run: generation check off, the model "
				     "must report a stale translation\n");
	Arena::instance();
	return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
	Input in(data, size);
	Arena &arena = Arena::instance();
	arena.reset();
	const mrsync_params params = decode_params(in);
	mrsync_ctx *ctx = nullptr;
	if (int rc = mrsync_ctx_create(&params, &ctx); rc != 0) {
		std::fprintf(stderr, "mrsync-fuzz: mrsync_ctx_create: %s\n", mrsync_last_error());
		std::abort();
	}
	{
		Run run(arena, ctx, params);
		run.model().trace("context: max_regions %u ring_entries %u max_registered_bytes %" PRIu64
				  " compact_threshold %#" PRIx64 " entry_size %" PRIu64 "%s",
				  params.max_regions, params.ring_entries, params.max_registered_bytes,
				  params.compact_threshold, params.entry_size,
				  negative_run ? " NO_GENERATION_CHECK" : "");
		run.model().check_state(ctx);
		for (unsigned i = 0; i < kMaxOps && !in.done(); ++i)
			run.step(in);
		run.finish();
	}
	mrsync_ctx_destroy(&ctx);
	return 0;
}
