/* SPDX-License-Identifier: MIT */
#include "fork_guard.hpp"

#include <pthread.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "context.hpp"

namespace mrsync::detail {

namespace {

std::mutex contexts_lock;
std::vector<Context *> &contexts()
{
	static std::vector<Context *> all;
	return all;
}

void before_fork()
{
	contexts_lock.lock();
	for (Context *ctx : contexts()) {
		ctx->lock().lock();
		ctx->note_fork();
	}
}

void after_fork_parent()
{
	for (Context *ctx : contexts())
		ctx->lock().unlock();
	contexts_lock.unlock();
}

void after_fork_child()
{
	for (Context *ctx : contexts()) {
		ctx->mark_forked();
		ctx->lock().unlock();
	}
	contexts_lock.unlock();
}

} // namespace

void fork_guard_add(Context *ctx)
{
	static std::once_flag installed;
	std::call_once(installed,
		       [] { pthread_atfork(before_fork, after_fork_parent, after_fork_child); });
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
