// Adversarial programs against mrsync (test/adversary): helpers on top of
// test/stale's (Tally, checked_write, options: --source, --iterations ...).
// Every program changes registered memory the way an application would, then
// -- strictly after the change returned, in the same thread or after a join --
// looks the memory up, DMA-writes a never-zero pattern through the uring HCA
// and checks by content that the application sees it.
#ifndef MRSYNC_TEST_ADVERSARY_HPP
#define MRSYNC_TEST_ADVERSARY_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "stale/stale.hpp"

namespace mrsync::test::adversary {

using stale::checked_write;
using stale::options;
using stale::Outcome;
using stale::Tally;

/** A context with --source, plus whatever the test sets in `params`. */
inline Result<Context> open(mrsync_params params = MRSYNC_PARAMS_INIT)
{
	params.driver = "uring";
	if (!params.sources)
		params.sources = options().source;
	return Context::create(params);
}

inline bool kmod()
{
	return stale::kmod();
}

/** Iterations: --iterations or the default given. */
inline std::uint64_t iterations(std::uint64_t def)
{
	return options().iterations ? options().iterations : def;
}

/** "VmPin:" of /proc/self/status in kB (pages pinned by io_uring count). */
inline long vm_pin_kb()
{
	std::ifstream f("/proc/self/status");
	std::string line;
	while (std::getline(f, line))
		if (line.rfind("VmPin:", 0) == 0)
			return std::stol(line.substr(6));
	return -1;
}

/** Prints "adversary <what> [<source>]: <tally>" and records it in the XML. */
inline void tell(const std::string &what, const Tally &t)
{
	std::printf("adversary %s [%s]: %s\n", what.c_str(), stale::source_name(),
		    t.line().c_str());
	std::fflush(stdout);
	testing::Test::RecordProperty(what + ".lost", std::to_string(t.lost));
}

/** A checked write of `len` bytes at `va` (see stale::checked_write). */
inline Outcome write_check(Context &ctx, void *va, std::size_t len, Tally &t, unsigned seed)
{
	return checked_write(ctx, static_cast<std::byte *>(va), len, t, seed);
}

/** A lookup of memory that is not there (nothing is written): counts it
 *  like checked_write does, delivered if the lookup worked. */
inline void lookup_only(Context &ctx, const void *va, std::size_t len, Tally &t)
{
	++t.lookups;
	mrsync_reg reg;
	if (int rc = mrsync_get(ctx.c_handle(), va, len, MRSYNC_ACCESS_LOCAL_WRITE, &reg); rc < 0) {
		t.failed(rc);
		return;
	}
	mrsync_put(ctx.c_handle(), &reg);
	t.count(Outcome::delivered);
}

/** Replaces a page with a fresh one without MADV_DONTNEED (whose race with
 *  a lookup of the same page is documented): mmap(MAP_FIXED) over it, a
 *  fresh page mremap'ed over it, or munmap + mmap. @return false if a call
 *  failed. */
inline bool change_fresh(std::byte *page, unsigned how)
{
	switch (how % 3) {
	case 0:
		return remap_fresh(page, kPage);
	case 1: {
		if (munmap(page, kPage) != 0)
			return false;
		return mmap(page, kPage, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == page;
	}
	default: {
		void *o = mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (o == MAP_FAILED)
			return false;
		std::memset(o, 0x3c, kPage);
		return mremap(o, kPage, kPage, MREMAP_MAYMOVE | MREMAP_FIXED, page) == page;
	}
	}
}

} // namespace mrsync::test::adversary

#endif
