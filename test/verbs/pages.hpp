// Anonymous pages that tests remap under a registration, and data patterns.
#ifndef MRSYNC_TEST_VERBS_PAGES_HPP
#define MRSYNC_TEST_VERBS_PAGES_HPP

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

namespace mrsync::test {

inline const std::size_t kPage = 4096;

inline std::vector<char> pattern(std::size_t len, unsigned seed)
{
	std::vector<char> p(len);
	for (std::size_t i = 0; i < len; ++i)
		p[i] = char((i * 131 + seed * 7 + 1) % 251 + 1);
	return p;
}
inline bool sees(const void *va, const std::vector<char> &p)
{
	return std::memcmp(va, p.data(), p.size()) == 0;
}

/* Anonymous pages, unmapped on destruction. */
struct Pages {
	char *base;
	std::size_t len;
	explicit Pages(std::size_t n) : len(n * kPage)
	{
		base = static_cast<char *>(mmap(nullptr, len, PROT_READ | PROT_WRITE,
						MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		std::memset(base, 0, len);
	}
	~Pages() { munmap(base, len); }
	/* munmap + mmap(MAP_FIXED) fresh zero pages at the same address */
	void remap(std::size_t page, std::size_t n = 1) const
	{
		char *at = base + page * kPage;
		ASSERT_EQ(munmap(at, n * kPage), 0);
		ASSERT_EQ(mmap(at, n * kPage, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), at);
	}
};

} // namespace mrsync::test

#endif
