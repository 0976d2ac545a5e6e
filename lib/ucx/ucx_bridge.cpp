/* SPDX-License-Identifier: MIT */
/* mrsync/ucx.h: subscriptions turned into UCX's external VM_UNMAPPED events.
 * Nothing is kept here: the watcher owns the subscriptions, UCX its caches. */
#include <mrsync/ucx.h>

#include <ucm/api/ucm.h>

extern "C" void mrsync_ucx_external_events(void)
{
	ucm_set_external_event(UCM_EVENT_VM_UNMAPPED);
}

extern "C" void mrsync_ucx_internal_events(void)
{
	ucm_unset_external_event(UCM_EVENT_VM_UNMAPPED);
}

extern "C" void mrsync_ucx_on_change(void * /*arg*/, const struct mrsync_change *change)
{
	/* Every UCX handler of VM_UNMAPPED, in UCX's priority order; ucs_rcache
	 * invalidates at once when its page-table lock is free, else queues
	 * the range for its next lookup. Either way that lookup misses. */
	ucm_vm_munmap(reinterpret_cast<void *>(change->start), change->end - change->start);
}

extern "C" int mrsync_ucx_watch(struct mrsync_watcher *watcher, const void *addr, size_t len,
				uint64_t *id)
{
	return mrsync_subscribe(watcher, addr, len, mrsync_ucx_on_change, nullptr, id);
}
