// SPDX-License-Identifier: MIT
// One real UCP transfer with the bridge in place: UCX 1.13's hooks off
// (UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no, VM_UNMAPPED external),
// a worker connected to itself over tcp (UCX_TLS=tcp, set by meson), a
// ucp_put_nbx into memory that was mapped, written, then replaced by raw
// munmap + mmap at the same address; the bridge reports the replacement
// before the second put, and the bytes must be in the memory the program
// sees. What this checks is that UCP runs and delivers with UCX's hooks off
// and the bridge feeding it; it has no negative control of its own: tcp
// registers nothing, so no stale registration can arise on this transport
// (ucx_rcache_test.cc has the cache's negative control).
#include <gtest/gtest.h>
#include <mrsync/mrsync.h>
#include <mrsync/subscribe.h>
#include <mrsync/ucx.h>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include <ucp/api/ucp.h>

namespace {

const std::size_t kPage = std::size_t(sysconf(_SC_PAGESIZE));

/* Waits for a request of ucp_*_nbx. */
ucs_status_t wait(ucp_worker_h worker, ucs_status_ptr_t req)
{
	if (!UCS_PTR_IS_PTR(req))
		return UCS_PTR_STATUS(req);
	ucs_status_t status;
	while ((status = ucp_request_check_status(req)) == UCS_INPROGRESS)
		ucp_worker_progress(worker);
	ucp_request_free(req);
	return status;
}

TEST(UcpPut, IntoRemappedMemoryLandsWithTheBridge)
{
	mrsync_ucx_external_events();
	mrsync_watcher *w = nullptr;
	const int rc = mrsync_watcher_create(MRSYNC_SOURCE_UFFD, &w);
	if (rc == -ENODEV)
		GTEST_SKIP() << mrsync_last_error();
	ASSERT_EQ(rc, 0) << mrsync_last_error();

	ucp_params_t params{};
	params.field_mask = UCP_PARAM_FIELD_FEATURES;
	params.features = UCP_FEATURE_RMA;
	ucp_context_h context;
	ASSERT_EQ(ucp_init(&params, nullptr, &context), UCS_OK);
	ucp_worker_params_t wparams{};
	wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
	wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
	ucp_worker_h worker;
	ASSERT_EQ(ucp_worker_create(context, &wparams, &worker), UCS_OK);
	ucp_address_t *address;
	size_t address_len;
	ASSERT_EQ(ucp_worker_get_address(worker, &address, &address_len), UCS_OK);
	ucp_ep_params_t eparams{};
	eparams.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
	eparams.address = address;
	ucp_ep_h ep;
	ASSERT_EQ(ucp_ep_create(worker, &eparams, &ep), UCS_OK);

	char *dst = static_cast<char *>(::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE,
					       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
	ASSERT_NE(dst, MAP_FAILED);
	std::memset(dst, '.', 2 * kPage);
	ASSERT_EQ(mrsync_ucx_watch(w, dst, 2 * kPage, nullptr), 0) << mrsync_last_error();
	ucp_mem_map_params_t mparams{};
	mparams.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
	mparams.address = dst;
	mparams.length = 2 * kPage;
	ucp_mem_h memh;
	ASSERT_EQ(ucp_mem_map(context, &mparams, &memh), UCS_OK);
	void *packed;
	size_t packed_len;
	ASSERT_EQ(ucp_rkey_pack(context, memh, &packed, &packed_len), UCS_OK);
	ucp_rkey_h rkey;
	ASSERT_EQ(ucp_ep_rkey_unpack(ep, packed, &rkey), UCS_OK);

	char src[64];
	ucp_request_param_t rparams{};
	auto put = [&](char fill) {
		std::memset(src, fill, sizeof src);
		EXPECT_EQ(mrsync_watcher_poll(w) >= 0, true); /* the bridge, before UCX */
		EXPECT_EQ(wait(worker, ucp_put_nbx(ep, src, sizeof src,
						   reinterpret_cast<std::uint64_t>(dst + kPage), rkey,
						   &rparams)),
			  UCS_OK);
		EXPECT_EQ(wait(worker, ucp_ep_flush_nbx(ep, &rparams)), UCS_OK);
	};
	put('A');
	EXPECT_EQ(dst[kPage], 'A');
	ASSERT_EQ(::syscall(SYS_munmap, dst + kPage, kPage), 0);
	ASSERT_EQ(reinterpret_cast<char *>(::syscall(SYS_mmap, dst + kPage, kPage,
						     PROT_READ | PROT_WRITE,
						     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)),
		  dst + kPage);
	ASSERT_EQ(dst[kPage], 0) << "the page was not replaced";
	put('B');
	EXPECT_EQ(dst[kPage], 'B');
	EXPECT_EQ(dst[kPage + sizeof src - 1], 'B');
	EXPECT_EQ(dst[kPage + sizeof src], 0);

	ucp_rkey_destroy(rkey);
	ucp_rkey_buffer_release(packed);
	ucp_mem_unmap(context, memh);
	wait(worker, ucp_ep_close_nbx(ep, &rparams));
	ucp_worker_release_address(worker, address);
	ucp_worker_destroy(worker);
	ucp_cleanup(context);
	mrsync_watcher_destroy(&w);
	::munmap(dst, 2 * kPage);
}

} // namespace
