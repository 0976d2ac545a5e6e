/* SPDX-License-Identifier: MIT */
/* --churn: a control thread that keeps freeing and reallocating the staging
 * buffers the forwarding lcores move payloads into -- hugepage memory
 * (rte_free + rte_malloc: the EAL unmaps and maps again, usually at the same
 * address) and plain anonymous memory (munmap + mmap at the same address).
 * The application itself never touches freed memory: a slab is unpublished,
 * the lcores pass a quiescent state (rte_rcu_qsbr), then it is freed. The
 * only staleness left to catch is the registration cache's. */
#ifndef MRPMD_CHURN_HPP
#define MRPMD_CHURN_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

namespace mrpmd {

struct App;

class Churn {
public:
	static constexpr unsigned kSlabs = 4;

	explicit Churn(App &app);
	~Churn();
	Churn(const Churn &) = delete;
	Churn &operator=(const Churn &) = delete;

	/** Allocates the slabs; false (with a message) if memory is short. */
	bool init();
	void start();
	void stop();

	/** Lcore side: slab k, or nullptr while it is being replaced. Valid
	 *  until the lcore's next quiescent state. */
	std::uint8_t *slab(unsigned k) const noexcept
	{
		return slabs_[k].base.load(std::memory_order_acquire);
	}
	std::size_t slab_bytes(unsigned k) const noexcept { return slabs_[k].bytes; }

	std::uint64_t hugepage_cycles() const noexcept { return huge_cycles_.load(); }
	std::uint64_t anon_cycles() const noexcept { return anon_cycles_.load(); }

private:
	struct Slab {
		std::atomic<std::uint8_t *> base{nullptr};
		std::size_t bytes = 0;
		bool hugepage = false;
	};
	void run();
	void cycle(Slab &s);
	std::uint8_t *allocate(const Slab &s, void *hint);
	void release(const Slab &s, std::uint8_t *p);

	App &app_;
	Slab slabs_[kSlabs];
	std::thread thread_;
	std::atomic<bool> stop_{false};
	std::atomic<std::uint64_t> huge_cycles_{0}, anon_cycles_{0};
};

} // namespace mrpmd

#endif
