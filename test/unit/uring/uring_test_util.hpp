/* SPDX-License-Identifier: MIT */
/* Helpers for the uring HCA unit tests: real anonymous mappings, an HCA per
 * test, synchronous DMA, and running a check in a fork child. */
#ifndef MRSYNC_TEST_URING_UTIL_HPP
#define MRSYNC_TEST_URING_UTIL_HPP

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <mrsync/mrsync.h>
#include <mrsync/uring.hpp>

namespace mrsync::uring::test {

inline constexpr std::uint64_t kPage = 4096;

/** An anonymous private mapping of whole pages (or 2 MiB hugepages). */
class Pages {
public:
	explicit Pages(std::size_t count, std::size_t page = kPage, int extra_flags = 0)
		: page_(page), len_(count * page)
	{
		void *p = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | extra_flags, -1, 0);
		base_ = p == MAP_FAILED ? nullptr : static_cast<std::byte *>(p);
	}
	~Pages()
	{
		if (base_)
			::munmap(base_, len_);
	}
	Pages(const Pages &) = delete;
	Pages &operator=(const Pages &) = delete;

	bool ok() const { return base_ != nullptr; }
	std::uint64_t va(std::size_t page = 0) const
	{
		return reinterpret_cast<std::uint64_t>(base_) + page * page_;
	}
	std::byte *at(std::size_t page) const { return base_ + page * page_; }
	std::span<std::byte> page(std::size_t i) const { return {at(i), page_}; }
	std::size_t bytes() const { return len_; }

	/** The application replaces page i with a fresh zero page (MAP_FIXED). */
	bool remap(std::size_t i, int extra_flags = 0)
	{
		void *p = ::mmap(at(i), page_, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE | extra_flags,
				 -1, 0);
		return p == at(i);
	}

private:
	std::byte *base_ = nullptr;
	std::size_t page_;
	std::size_t len_;
};

/** n bytes of a pattern that differs per seed and per offset. */
inline std::vector<std::byte> pattern(std::size_t n, unsigned seed)
{
	std::vector<std::byte> v(n);
	for (std::size_t i = 0; i < n; ++i)
		v[i] = std::byte((i * 131 + seed * 7 + (i >> 12)) & 0xff);
	return v;
}

inline bool same(std::span<const std::byte> a, std::span<const std::byte> b)
{
	return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

inline bool all_bytes(std::span<const std::byte> s, std::byte v)
{
	return std::all_of(s.begin(), s.end(), [v](std::byte b) { return b == v; });
}

/** A fresh user_data per request, so tests can wait for exactly theirs. */
inline std::uint64_t next_user_data()
{
	static std::atomic<std::uint64_t> next{1};
	return next++;
}

/** The result of a request just submitted with `ud`: its completion's
 *  bytes or -errno; a submit or wait error fails the test and is returned
 *  as its -errno. */
inline int result_of(Hca &hca, const Status &submitted, std::uint64_t ud)
{
	if (!submitted) {
		ADD_FAILURE() << submitted.error().message;
		return -submitted.error().code;
	}
	auto c = hca.wait(ud);
	if (!c) {
		ADD_FAILURE() << c.error().message;
		return -c.error().code;
	}
	return c->result;
}

/** DMA write; returns its completion's result. */
inline int write_sync(Hca &hca, std::uint32_t key, std::uint64_t va, std::span<const std::byte> src)
{
	const auto ud = next_user_data();
	return result_of(hca, hca.write(key, va, src, ud), ud);
}

/** DMA read into dst; returns its completion's result. */
inline int read_sync(Hca &hca, std::uint32_t key, std::uint64_t va, std::span<std::byte> dst)
{
	const auto ud = next_user_data();
	return result_of(hca, hca.read(key, va, dst, ud), ud);
}

/** Collects every outstanding completion when it goes out of scope: declared
 *  after the buffers reads go to, it keeps a failing test (or a broken
 *  fence) from leaving DMA in flight into freed memory. */
class DrainOnExit {
public:
	explicit DrainOnExit(Hca &hca) : hca_(hca) {}
	~DrainOnExit()
	{
		while (hca_.wait_one())
			;
	}
	DrainOnExit(const DrainOnExit &) = delete;
	DrainOnExit &operator=(const DrainOnExit &) = delete;

private:
	Hca &hca_;
};

/** Runs `check` in a fork child; it returns "" or what went wrong, which the
 *  parent reports. Lets a test change credentials or play the fork child. */
inline void in_child(const std::function<std::string()> &check)
{
	int fds[2];
	ASSERT_EQ(::pipe(fds), 0);
	const pid_t pid = ::fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		::close(fds[0]);
		const std::string msg = check();
		(void)!::write(fds[1], msg.data(), msg.size());
		::_exit(msg.empty() ? 0 : 1);
	}
	::close(fds[1]);
	std::string msg;
	char buf[512];
	for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;)
		msg.append(buf, std::size_t(n));
	::close(fds[0]);
	int status = 0;
	ASSERT_EQ(::waitpid(pid, &status, 0), pid);
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
		<< "child failed: " << (msg.empty() ? "(no message, crashed?)" : msg);
}

/** One HCA per test; skips where io_uring cannot serve. */
class UringTest : public ::testing::Test {
protected:
	void SetUp() override
	{
		std::string why;
		if (!Hca::available(why))
			GTEST_SKIP() << "io_uring HCA unavailable: " << why;
		auto h = Hca::create(options_);
		ASSERT_TRUE(h) << h.error().message;
		hca = std::move(h).value();
	}

	/** Pins [va, va + len), failing the test on error. */
	BackingId pin(std::uint64_t va, std::uint64_t len)
	{
		auto b = hca->pin(va, len);
		EXPECT_TRUE(b) << b.error().message;
		return b ? *b : kNoBacking;
	}

	/** Creates a registration with every access right, failing the test on error. */
	Keys create(std::uint64_t va, std::uint64_t len, std::span<const Extent> t)
	{
		auto k = hca->create(va, len, MRSYNC_ACCESS_ALL, t);
		EXPECT_TRUE(k) << k.error().message;
		return k ? *k : Keys{};
	}

	/** Pins all of `mem` as one backing and registers it with one extent. */
	Keys register_whole(const Pages &mem)
	{
		const Extent t[] = {{0, mem.bytes(), pin(mem.va(), mem.bytes())}};
		return create(mem.va(), mem.bytes(), t);
	}

	HcaOptions options_{};
	std::unique_ptr<Hca> hca;
};

} // namespace mrsync::uring::test

#endif
