/* SPDX-License-Identifier: MIT */
#include "churn.hpp"

#include <sys/mman.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include "app.hpp"

namespace mrpmd {
namespace {

constexpr std::size_t kHugeSlab = 4u << 20; /* two 2 MiB pages: really unmapped on free */
constexpr std::size_t kAnonSlab = 256u << 10;
constexpr auto kPeriod = std::chrono::milliseconds(2);

} // namespace

Churn::Churn(App &app) : app_(app)
{
	for (unsigned k = 0; k < kSlabs; ++k) {
		slabs_[k].hugepage = k % 2 == 0;
		slabs_[k].bytes = slabs_[k].hugepage ? kHugeSlab : kAnonSlab;
	}
}

Churn::~Churn()
{
	stop();
	for (Slab &s : slabs_)
		if (auto *p = s.base.exchange(nullptr))
			release(s, p);
}

std::uint8_t *Churn::allocate(const Slab &s, void *hint)
{
	void *p;
	if (s.hugepage) {
		p = rte_malloc("mrpmd-churn", s.bytes, 2u << 20);
	} else {
		/* The same address again when nobody took it: the case a cache
		 * keyed by address gets wrong. */
		p = mmap(hint, s.bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | (hint ? MAP_FIXED_NOREPLACE : 0), -1, 0);
		if (p == MAP_FAILED && hint)
			p = mmap(nullptr, s.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				 -1, 0);
		if (p == MAP_FAILED)
			p = nullptr;
	}
	if (p)
		std::memset(p, 0, s.bytes);
	return static_cast<std::uint8_t *>(p);
}

void Churn::release(const Slab &s, std::uint8_t *p)
{
	if (s.hugepage)
		rte_free(p);
	else
		munmap(p, s.bytes);
}

bool Churn::init()
{
	for (Slab &s : slabs_) {
		auto *p = allocate(s, nullptr);
		if (!p) {
			fprintf(stderr, "mrpmd: --churn: cannot allocate a %zu-byte %s staging buffer\n",
				s.bytes, s.hugepage ? "hugepage" : "anonymous");
			return false;
		}
		s.base.store(p, std::memory_order_release);
	}
	return true;
}

void Churn::start()
{
	if (thread_.joinable())
		return;
	stop_ = false;
	thread_ = std::thread([this] { run(); });
}

void Churn::stop()
{
	stop_ = true;
	if (thread_.joinable())
		thread_.join();
}

void Churn::cycle(Slab &s)
{
	std::uint8_t *old = s.base.exchange(nullptr, std::memory_order_acq_rel);
	if (!old)
		return;
	/* Every lcore that might still hold `old` passes a quiescent state. */
	rte_rcu_qsbr_synchronize(app_.qsbr, RTE_QSBR_THRID_INVALID);
	release(s, old);
	std::uint8_t *fresh = allocate(s, old);
	s.base.store(fresh, std::memory_order_release);
	(s.hugepage ? huge_cycles_ : anon_cycles_).fetch_add(1, std::memory_order_relaxed);
}

void Churn::run()
{
	for (unsigned k = 0; !stop_.load(std::memory_order_relaxed); k = (k + 1) % kSlabs) {
		cycle(slabs_[k]);
		std::this_thread::sleep_for(kPeriod);
	}
}

} // namespace mrpmd
