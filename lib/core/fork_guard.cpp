/* SPDX-License-Identifier: MIT */
/* The fork registry (fork_guard.hpp) and the contexts phase. */
#include "fork_guard.hpp"

#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "context.hpp"

namespace mrsync::detail {

namespace {

constexpr int kPhases = 2;
/* Every component of the library that has fork handlers, with room to spare:
 * a fixed table, because the handlers must not allocate in the child. */
constexpr std::size_t kPerPhase = 4;

using Handler = void (*)() noexcept;

/* Handlers are read by fork() without a lock: a lock taken here could be
 * held by a thread that registers under a context lock while another thread
 * forks and waits for that context lock. So a slot is written first and
 * published by the release store of `count`; a registration racing with a
 * fork may miss that fork, which is harmless: the component registers
 * before it has anything to guard. */
struct Phase {
	std::array<ForkHandlers, kPerPhase> handlers{};
	std::atomic<std::size_t> count{0};
};

std::mutex register_lock; /* serialises registrations only */
std::array<Phase, kPhases> &table()
{
	static std::array<Phase, kPhases> phases;
	return phases;
}

/* Serialises forks (from prepare to parent/child) and guards `ran`: the
 * handlers run after fork are those whose prepare ran, even if a component
 * registered in between. Registrations never take it. */
std::mutex fork_lock;
std::array<std::size_t, kPhases> ran{};

void run_prepare() noexcept
{
	fork_lock.lock();
	auto &phases = table();
	for (int p = 0; p < kPhases; ++p) {
		ran[p] = phases[p].count.load(std::memory_order_acquire);
		for (std::size_t i = 0; i < ran[p]; ++i)
			if (phases[p].handlers[i].prepare)
				phases[p].handlers[i].prepare();
	}
}

/* Parent and child: the reverse of prepare, as locks are released. */
template <Handler ForkHandlers::*which>
void run_after() noexcept
{
	auto &phases = table();
	for (int p = kPhases; p-- > 0;)
		for (std::size_t i = ran[p]; i-- > 0;)
			if (phases[p].handlers[i].*which)
				(phases[p].handlers[i].*which)();
	fork_lock.unlock();
}

/* The contexts phase. */
std::mutex contexts_lock;
std::vector<Context *> &contexts()
{
	static std::vector<Context *> all;
	return all;
}

void contexts_prepare() noexcept
{
	contexts_lock.lock();
	for (Context *ctx : contexts()) {
		ctx->lock().lock();
		ctx->hub_lock().lock(); /* a watcher's thread may hold it (source_hub.hpp) */
		ctx->note_fork();
	}
}

void contexts_parent() noexcept
{
	for (Context *ctx : contexts()) {
		ctx->hub_lock().unlock();
		ctx->lock().unlock();
	}
	contexts_lock.unlock();
}

void contexts_child() noexcept
{
	for (Context *ctx : contexts()) {
		ctx->mark_forked();
		ctx->hub_lock().unlock();
		ctx->lock().unlock();
	}
	contexts_lock.unlock();
}

} // namespace

void fork_register(ForkPhase phase, ForkHandlers handlers)
{
	static std::once_flag installed;
	std::call_once(installed,
		       [] { ::pthread_atfork(run_prepare, run_after<&ForkHandlers::parent>,
					     run_after<&ForkHandlers::child>); });
	std::lock_guard guard(register_lock);
	Phase &slot = table()[static_cast<int>(phase)];
	const std::size_t count = slot.count.load(std::memory_order_relaxed);
	if (count == slot.handlers.size())
		std::abort();
	slot.handlers[count] = handlers;
	slot.count.store(count + 1, std::memory_order_release);
}

void fork_guard_add(Context *ctx)
{
	static std::once_flag registered;
	std::call_once(registered, [] {
		fork_register(ForkPhase::contexts,
			      {.prepare = contexts_prepare,
			       .parent = contexts_parent,
			       .child = contexts_child});
	});
	std::lock_guard guard(contexts_lock);
	contexts().push_back(ctx);
}

void fork_guard_remove(Context *ctx)
{
	std::lock_guard guard(contexts_lock);
	auto &all = contexts();
	all.erase(std::remove(all.begin(), all.end(), ctx), all.end());
}

} // namespace mrsync::detail
