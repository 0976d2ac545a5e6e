/* SPDX-License-Identifier: MIT */
/* mrsync/ofi.h: a struct fid_mem_monitor whose export ops are subscriptions.
 * libfabric calls every op with its mm_lock held, so nothing here calls back
 * into libfabric (its notify op takes that lock): a change is kept in
 * `changed` until the hit that would use the entry asks valid(). */
#include <mrsync/ofi.h>

#include <rdma/fabric.h>
#include <rdma/fi_ext.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <utility>

#include "range_set.hpp"

using mrsync::Range;

struct mrsync_ofi_monitor {
	fid_mem_monitor fid{}; /* first: libfabric's pointer is ours */
	fi_ops_mem_monitor ops{};
	mrsync_watcher *watcher = nullptr;
	std::mutex mu; /* what follows; libfabric's mm_lock is held anyway */
	std::multimap<std::pair<std::uintptr_t, std::size_t>, std::uint64_t> subscriptions;
	/* Changed since reported, page-aligned: an entry overlapping it is not
	 * valid. A range leaves it when valid() refuses an entry over it. */
	mrsync::detail::RangeSet changed;
	std::atomic<std::uint64_t> subscribes{0}, unsubscribes{0}, valid_calls{0}, invalidated{0};
};

namespace {

thread_local std::string last_error;

int fail(int code, std::string message)
{
	last_error = std::move(message);
	return -code;
}

mrsync_ofi_monitor *self(fid_mem_monitor *fid)
{
	return reinterpret_cast<mrsync_ofi_monitor *>(fid);
}

/* The watcher's callback, during a poll from one of the ops below. */
void on_change(void *arg, const mrsync_change *c)
{
	auto *m = static_cast<mrsync_ofi_monitor *>(arg);
	std::lock_guard guard(m->mu);
	m->changed.add({c->start, c->end});
}

int start(fid_mem_monitor *)
{
	return 0; /* the watcher's sources run from its creation */
}

void stop(fid_mem_monitor *) {}

int subscribe(fid_mem_monitor *fid, const void *addr, size_t len)
{
	mrsync_ofi_monitor *m = self(fid);
	std::uint64_t id = 0;
	/* Memory no source can see (-ENOTSUP) is not cached by libfabric:
	 * a failed subscribe leaves the entry uncached. */
	const int rc = mrsync_subscribe(m->watcher, addr, len, on_change, m, &id);
	if (rc < 0)
		return rc;
	std::lock_guard guard(m->mu);
	m->subscriptions.emplace(std::make_pair(reinterpret_cast<std::uintptr_t>(addr), len), id);
	++m->subscribes;
	return 0;
}

void unsubscribe(fid_mem_monitor *fid, const void *addr, size_t len)
{
	mrsync_ofi_monitor *m = self(fid);
	std::uint64_t id = 0;
	{
		std::lock_guard guard(m->mu);
		auto it = m->subscriptions.find({reinterpret_cast<std::uintptr_t>(addr), len});
		if (it == m->subscriptions.end())
			return;
		id = it->second;
		m->subscriptions.erase(it);
		++m->unsubscribes;
	}
	mrsync_unsubscribe(m->watcher, id);
}

bool valid(fid_mem_monitor *fid, const void *addr, size_t len)
{
	mrsync_ofi_monitor *m = self(fid);
	++m->valid_calls;
	/* One load a source when nothing changed: the hit path's price. */
	if (mrsync_watcher_poll(m->watcher) < 0)
		return false;
	const auto start = reinterpret_cast<std::uint64_t>(addr);
	const Range range{start, start + len};
	std::lock_guard guard(m->mu);
	if (m->changed.empty() || m->changed.intersect(range).empty())
		return true;
	/* libfabric drops the entry and registers the memory again after this
	 * answer: changes before it are in the new registration. */
	m->changed.remove(range);
	++m->invalidated;
	return false;
}

} // namespace

extern "C" int mrsync_ofi_monitor_import(mrsync_watcher *watcher, mrsync_ofi_monitor **out)
{
	if (!watcher || !out)
		return fail(EINVAL, !watcher ? "watcher is NULL" : "out is NULL");
	auto *m = new (std::nothrow) mrsync_ofi_monitor;
	if (!m)
		return fail(ENOMEM, "out of memory");
	m->watcher = watcher;
	m->ops = {sizeof(fi_ops_mem_monitor), start, stop, subscribe, unsubscribe, valid};
	m->fid.fid.fclass = FI_CLASS_MEM_MONITOR;
	m->fid.export_ops = &m->ops;
	struct fid *cache = nullptr;
	int rc = fi_open(FI_VERSION(1, 13), "mr_cache", nullptr, 0, 0, &cache, nullptr);
	if (rc == 0) {
		rc = fi_import_fid(cache, &m->fid.fid, 0);
		fi_close(cache);
	}
	if (rc != 0) {
		delete m;
		return fail(-rc < 0 ? EIO : -rc,
			    std::string("libfabric refused the monitor (fi_open(\"mr_cache\") + "
					"fi_import_fid): ") + fi_strerror(-rc));
	}
	*out = m;
	return 0;
}

extern "C" void mrsync_ofi_monitor_close(mrsync_ofi_monitor **monitor)
{
	if (!monitor || !*monitor)
		return;
	mrsync_ofi_monitor *m = *monitor;
	if (m->fid.fid.ops) /* set by libfabric at import: its close detaches */
		fi_close(&m->fid.fid);
	{
		std::lock_guard guard(m->mu);
		for (const auto &[range, id] : m->subscriptions)
			mrsync_unsubscribe(m->watcher, id);
	}
	delete m;
	*monitor = nullptr;
}

extern "C" int mrsync_ofi_monitor_stats(const mrsync_ofi_monitor *m, mrsync_ofi_stats *out)
{
	if (!m || !out)
		return fail(EINVAL, !m ? "monitor is NULL" : "out is NULL");
	*out = {m->subscribes.load(), m->unsubscribes.load(), m->valid_calls.load(),
		m->invalidated.load()};
	return 0;
}

extern "C" const char *mrsync_ofi_last_error(void)
{
	return last_error.c_str();
}
