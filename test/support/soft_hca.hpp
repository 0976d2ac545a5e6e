// Helpers for tests that move data through the uring software HCA and
// change mappings underneath it. Header-only, tests only.
#ifndef MRSYNC_TEST_SOFT_HCA_HPP
#define MRSYNC_TEST_SOFT_HCA_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <mrsync/mrsync.hpp>
#include <mrsync/uring.hpp>

namespace mrsync::test {

inline constexpr std::size_t kPage = 4096;
inline constexpr std::size_t kHugePage = 2u << 20;

/** An anonymous mapping unmapped on destruction (whatever is still there).
 *  `align` (a power of two; 0 = the page size) places it on such a boundary,
 *  e.g. 2 MiB so that a hugepage segment can be attached inside it. */
class Mapping {
public:
	explicit Mapping(std::size_t len, int extra_flags = 0, std::size_t align = 0) : len_(len)
	{
		const std::size_t slack = align > kPage ? align : 0;
		void *p = mmap(nullptr, len + slack, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
		base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte *>(p);
		if (base_ && slack) { /* keep the aligned part, give back the rest */
			const auto at = reinterpret_cast<std::uintptr_t>(base_);
			const std::size_t head = ((at + align - 1) & ~(align - 1)) - at;
			if (head)
				munmap(base_, head);
			if (slack - head)
				munmap(base_ + head + len, slack - head);
			base_ += head;
		}
		if (base_)
			std::memset(base_, 0, len);
	}
	~Mapping()
	{
		if (base_)
			munmap(base_, len_);
	}
	Mapping(const Mapping &) = delete;
	Mapping &operator=(const Mapping &) = delete;

	explicit operator bool() const { return base_ != nullptr; }
	/** Leaves whatever is mapped there alone from now on (part of it now
	 *  belongs to someone else). */
	void forget() { base_ = nullptr; }
	std::byte *at(std::size_t off) const { return base_ + off; }
	std::size_t size() const { return len_; }

private:
	std::byte *base_ = nullptr;
	std::size_t len_ = 0;
};

/** mmap(MAP_FIXED) fresh anonymous memory over [addr, addr + len). */
inline bool remap_fresh(void *addr, std::size_t len, int extra_flags = 0)
{
	return mmap(addr, len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | extra_flags, -1, 0) == addr;
}

inline std::uint64_t next_user_data()
{
	static std::atomic<std::uint64_t> next{1};
	return next.fetch_add(1);
}

/** DMA-writes `bytes` at `va` through `lkey` and waits: the result is the
 *  byte count or -errno (a refusal). */
inline int dma_write(uring::Hca &hca, std::uint32_t lkey, const void *va,
		     const std::vector<std::byte> &bytes)
{
	const std::uint64_t tag = next_user_data();
	auto ok = hca.write(lkey, reinterpret_cast<std::uint64_t>(va), bytes, tag);
	if (!ok)
		return -ok.error().code;
	auto done = hca.wait(tag);
	return done ? done->result : -done.error().code;
}

/** A recognisable non-zero pattern. */
inline std::vector<std::byte> pattern(std::size_t len, unsigned seed)
{
	std::vector<std::byte> p(len);
	for (std::size_t i = 0; i < len; ++i)
		p[i] = std::byte((i * 131 + seed * 7 + 1) % 251 + 1);
	return p;
}

inline bool sees(const void *va, const std::vector<std::byte> &bytes)
{
	return std::memcmp(va, bytes.data(), bytes.size()) == 0;
}

inline long meminfo(const char *key)
{
	std::ifstream f("/proc/meminfo");
	std::string line;
	const std::size_t n = std::strlen(key);
	while (std::getline(f, line))
		if (line.compare(0, n, key) == 0)
			return std::stol(line.substr(n));
	return -1;
}

/** A context on the uring HCA; `params.driver` is set to "uring". */
inline Context make_context(mrsync_params params)
{
	params.driver = "uring";
	auto ctx = Context::create(params);
	if (!ctx)
		ADD_FAILURE() << "context: " << ctx.error().message;
	return std::move(ctx).value();
}

/** A context on the uring HCA with the given sources. */
inline Context make_context(std::uint32_t sources, std::uint32_t flags = 0,
			    std::uint32_t ring_entries = 0)
{
	mrsync_params params = MRSYNC_PARAMS_INIT;
	params.sources = sources;
	params.flags = flags;
	params.ring_entries = ring_entries;
	return make_context(params);
}

inline uring::Hca &hca_of(Context &ctx)
{
	return dynamic_cast<uring::Hca &>(ctx.driver());
}

} // namespace mrsync::test

#endif
