// Shared by the DPDK suites: an EAL started once per process from the
// arguments a suite's main() passes, and a fixture that attaches mrsync with
// given sources and flags and detaches after each test.
#ifndef MRSYNC_TEST_EAL_FIXTURE_HPP
#define MRSYNC_TEST_EAL_FIXTURE_HPP

#include <rte_eal.h>
#include <rte_malloc.h>

#include <mrsync/mrsync_dpdk.h>

#include "support/soft_hca.hpp"

namespace mrsync::test {

/** Runs the suite inside an EAL started with `eal_args` (argv[0] first). */
int run_with_eal(int argc, char **argv, std::vector<const char *> eal_args);

/** Attached to the EAL for one test, on the uring HCA. */
class Attached {
public:
	explicit Attached(std::uint32_t extra_sources, std::uint32_t flags = 0,
			  std::uint32_t dpdk_flags = 0)
	{
		mrsync_dpdk_params p = MRSYNC_DPDK_PARAMS_INIT;
		p.extra_sources = extra_sources;
		p.ctx_flags = flags;
		p.flags = dpdk_flags;
		p.driver = "uring";
		rc_ = mrsync_dpdk_attach(&p, &md_);
		if (rc_ < 0)
			ADD_FAILURE() << "attach: " << mrsync_dpdk_last_error();
	}
	~Attached() { mrsync_dpdk_detach(&md_); }
	Attached(const Attached &) = delete;
	Attached &operator=(const Attached &) = delete;

	explicit operator bool() const { return md_ != nullptr; }
	mrsync_dpdk *md() const { return md_; }
	mrsync_ctx *ctx() const { return mrsync_dpdk_ctx(md_); }
	mrsync_dpdk_lcore *lcore() const { return mrsync_dpdk_lcore_cache(md_); }
	uring::Hca &hca() const { return dynamic_cast<uring::Hca &>(driver_of(ctx())); }
	/** The DPDK layer's counters and the cache's own (`core`). */
	struct Stats : mrsync_dpdk_stats {
		mrsync_stats core;
	};
	Stats stats() const
	{
		Stats s{};
		EXPECT_EQ(mrsync_dpdk_get_stats(md_, &s, sizeof(mrsync_dpdk_stats)), 0);
		EXPECT_EQ(mrsync_get_stats(ctx(), &s.core, sizeof s.core), 0);
		return s;
	}

	/** Looks the buffer up on this lcore, DMA-writes a pattern through the
	 *  key and says whether the application sees it. */
	bool write_lands(void *va, std::size_t len, unsigned seed) const
	{
		mrsync_dpdk_key key;
		if (int rc = mrsync_dpdk_lookup(lcore(), va, len, &key); rc < 0) {
			ADD_FAILURE() << "lookup: " << mrsync_dpdk_last_error();
			return false;
		}
		const auto bytes = pattern(len, seed);
		const int n = dma_write(hca(), key.lkey, va, bytes);
		return n == int(len) && sees(va, bytes);
	}

private:
	mrsync_dpdk *md_ = nullptr;
	int rc_ = 0;
};

/** rte_malloc'd memory, rte_free'd on destruction unless released. */
struct EalBuffer {
	void *p = nullptr;
	explicit EalBuffer(std::size_t len) : p(rte_malloc("mrsync-test", len, 2u << 20)) {}
	~EalBuffer() { reset(); }
	void reset()
	{
		rte_free(p);
		p = nullptr;
	}
};

} // namespace mrsync::test

#endif
