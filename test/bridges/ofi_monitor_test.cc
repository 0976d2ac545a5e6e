// SPDX-License-Identifier: MIT
// Debian's unmodified libfabric 1.17 with mrsync imported as its memory
// monitor (libmrsync_ofi): a provider whose fi_mr_reg() goes through
// libfabric's MR cache registers a buffer, the memory is replaced behind
// everybody's back (raw munmap + mmap at the same address), and the next
// fi_mr_reg() must hand out a new registration: an RDMA write through it
// lands in the memory the program sees (checked by content where the
// provider opens an endpoint; the keys are checked in any case).
// --negative-control: the monitor's watcher has only the manual source,
// which nobody tells: the cache hands back the stale registration and the
// write through it is lost (exit 0 only if it is).
// Exit 77 (skipped) when the provider is absent or does not use the cache:
// on the host no provider of Debian's 1.17 does (tcp, tcp;ofi_rxm,
// udp;ofi_rxd, shm and sockets register nothing); in the QEMU guest
// verbs;ofi_rxm on Soft-RoCE does (test/vm).
#include <mrsync/mrsync.h>
#include <mrsync/ofi.h>
#include <mrsync/subscribe.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr int kSkip = 77;
const std::size_t kPage = std::size_t(sysconf(_SC_PAGESIZE));
constexpr std::size_t kPages = 4;

[[noreturn]] void quit(int code, const char *what, int rc = 0)
{
	std::printf("ofi-monitor: %s%s%s\n", what, rc ? ": " : "", rc ? fi_strerror(-rc) : "");
	std::exit(code);
}

void check(int rc, const char *what)
{
	if (rc)
		quit(1, what, rc);
}

/* One RDM endpoint talking to itself: enough for an RDMA write into our own
 * registered memory through the provider's data path. */
struct Loopback {
	fi_info *info = nullptr;
	fid_fabric *fabric = nullptr;
	fid_domain *domain = nullptr;
	fid_ep *ep = nullptr;
	fid_cq *cq = nullptr;
	fid_av *av = nullptr;
	fi_addr_t self = FI_ADDR_UNSPEC;

	explicit Loopback(const char *provider)
	{
		fi_info *hints = fi_allocinfo();
		hints->fabric_attr->prov_name = strdup(provider);
		hints->caps = FI_MSG | FI_RMA;
		hints->ep_attr->type = FI_EP_RDM;
		hints->tx_attr->size = 64;
		hints->rx_attr->size = 64;
		hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
					      FI_MR_PROV_KEY;
		const int rc = fi_getinfo(FI_VERSION(1, 17), nullptr, nullptr, 0, hints, &info);
		fi_freeinfo(hints);
		if (rc)
			quit(kSkip, "no such provider here (fi_getinfo)", rc);
		check(fi_fabric(info->fabric_attr, &fabric, nullptr), "fi_fabric");
		check(fi_domain(fabric, info, &domain, nullptr), "fi_domain");
	}
	/* 0, or the failing call's code (named in `what`). */
	int open_endpoint(const char *&what)
	{
		fi_cq_attr cq_attr{};
		cq_attr.format = FI_CQ_FORMAT_CONTEXT;
		fi_av_attr av_attr{};
		av_attr.type = FI_AV_TABLE;
		char name[256];
		size_t len = sizeof name;
		int rc;
		if ((rc = fi_cq_open(domain, &cq_attr, &cq, nullptr)) ||
		    (rc = fi_av_open(domain, &av_attr, &av, nullptr)) ||
		    (rc = fi_endpoint(domain, info, &ep, nullptr)) ||
		    (rc = fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV)) ||
		    (rc = fi_ep_bind(ep, &av->fid, 0)) || (rc = fi_enable(ep)) ||
		    (rc = fi_getname(&ep->fid, name, &len))) {
			what = "opening an endpoint (fi_cq_open .. fi_getname)";
			return rc;
		}
		if (fi_av_insert(av, name, 1, &self, 0, nullptr) != 1) {
			what = "fi_av_insert of our own address";
			return -FI_EINVAL;
		}
		return 0;
	}
	/* RDMA-writes `len` bytes of `src` (registered as `src_desc`) to `dst`
	 * under `key`, and waits for the completion. */
	void write(const void *src, void *src_desc, std::size_t len, void *dst, std::uint64_t key)
	{
		ssize_t rc;
		while ((rc = fi_write(ep, src, len, src_desc, self, reinterpret_cast<std::uint64_t>(dst),
				      key, nullptr)) == -FI_EAGAIN)
			fi_cq_read(cq, nullptr, 0);
		check(int(rc), "fi_write");
		fi_cq_entry entry;
		while ((rc = fi_cq_read(cq, &entry, 1)) == -FI_EAGAIN)
			;
		if (rc != 1)
			quit(1, "fi_write's completion", int(rc));
	}
	~Loopback()
	{
		if (ep)
			fi_close(&ep->fid);
		if (av)
			fi_close(&av->fid);
		if (cq)
			fi_close(&cq->fid);
		if (domain)
			fi_close(&domain->fid);
		if (fabric)
			fi_close(&fabric->fid);
		fi_freeinfo(info);
	}
};

struct Mr {
	fid_mr *mr = nullptr;
	Mr(fid_domain *domain, void *addr, std::size_t len)
	{
		check(fi_mr_reg(domain, addr, len, FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE,
				0, 0, 0, &mr, nullptr),
		      "fi_mr_reg");
	}
	~Mr() { fi_close(&mr->fid); } /* the cache keeps the entry (LRU) */
	std::uint64_t key() const { return fi_mr_key(mr); }
	void *desc() const { return fi_mr_desc(mr); }
};

mrsync_ofi_stats stats(const mrsync_ofi_monitor *m)
{
	mrsync_ofi_stats s{};
	mrsync_ofi_monitor_stats(m, &s);
	return s;
}

} // namespace

int main(int argc, char **argv)
{
	const char *provider = "verbs;ofi_rxm";
	::setenv("FI_LOG_LEVEL", "warn", 0); /* libfabric says why a call failed */
	/* rxm sizes its verbs CQ for 256 peers by default, past what Soft-RoCE
	 * gives one CQ; we talk to ourselves. */
	::setenv("FI_UNIVERSE_SIZE", "2", 0);
	bool negative = false;
	for (int i = 1; i < argc; ++i) {
		if (!std::strncmp(argv[i], "--provider=", 11))
			provider = argv[i] + 11;
		else if (!std::strcmp(argv[i], "--negative-control"))
			negative = true;
		else
			quit(2, "usage: ofi_monitor_test [--provider=NAME] [--negative-control]");
	}
	mrsync_watcher *watcher = nullptr;
	if (mrsync_watcher_create(negative ? MRSYNC_SOURCE_MANUAL : 0, &watcher) < 0)
		quit(kSkip, mrsync_last_error());
	mrsync_ofi_monitor *monitor = nullptr;
	if (mrsync_ofi_monitor_import(watcher, &monitor) < 0)
		quit(1, mrsync_ofi_last_error());
	int code = 1;
	{
		Loopback fab(provider);
		char *buf = static_cast<char *>(::mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
						       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		std::memset(buf, 'a', kPages * kPage);
		std::uint64_t first_key;
		{
			Mr first(fab.domain, buf, kPages * kPage);
			first_key = first.key();
		}
		if (!stats(monitor).subscribes) {
			std::printf("ofi-monitor: provider %s does not register through libfabric's MR "
				    "cache (no subscribe reached the monitor)\n", fab.info->fabric_attr->prov_name);
			return kSkip;
		}
		{
			Mr again(fab.domain, buf, kPages * kPage);
			if (again.key() != first_key || stats(monitor).valid_calls == 0)
				quit(1, "a second registration of the same memory was not a cache hit");
		}
		/* Behind libfabric's back: raw system calls, no hook sees them. */
		if (::syscall(SYS_munmap, buf + kPage, kPage) != 0 ||
		    reinterpret_cast<char *>(::syscall(SYS_mmap, buf + kPage, kPage, PROT_READ | PROT_WRITE,
						       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)) !=
			    buf + kPage)
			quit(1, "raw munmap/mmap failed");
		/* The registration itself: a new one, or the stale one back. */
		Mr dst(fab.domain, buf, kPages * kPage);
		const bool renewed = dst.key() != first_key && stats(monitor).invalidated > 0;
		/* Then by content, where the provider gives us an endpoint: an
		 * RDMA write through that registration into the replaced page. */
		const char *what = "";
		const int ep_rc = fab.open_endpoint(what);
		char *src = static_cast<char *>(::mmap(nullptr, kPage, PROT_READ | PROT_WRITE,
						       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
		std::memset(src, 'Z', kPage);
		int landed = -1; /* not checked */
		if (ep_rc == 0) {
			Mr src_mr(fab.domain, src, kPage);
			fab.write(src, src_mr.desc(), kPage, buf + kPage, dst.key());
			landed = buf[kPage] == 'Z' && buf[2 * kPage - 1] == 'Z';
		} else {
			std::printf("ofi-monitor: no content check, %s failed: %s\n", what,
				    fi_strerror(-ep_rc));
		}
		const mrsync_ofi_stats s = stats(monitor);
		std::printf("ofi-monitor: provider=%s negative_control=%d key_before=%#llx key_after=%#llx "
			    "subscribes=%llu valid_calls=%llu invalidated=%llu write_landed=%d\n",
			    fab.info->fabric_attr->prov_name, int(negative),
			    (unsigned long long)first_key, (unsigned long long)dst.key(),
			    (unsigned long long)s.subscribes, (unsigned long long)s.valid_calls,
			    (unsigned long long)s.invalidated, landed);
		if (negative) /* must be stale, and lose the write where checked */
			code = !renewed && landed != 1 ? 0 : 1;
		else
			code = renewed && landed != 0 ? 0 : 1;
		::munmap(src, kPage);
		::munmap(buf, kPages * kPage);
	}
	mrsync_ofi_monitor_close(&monitor);
	mrsync_watcher_destroy(&watcher);
	std::printf("ofi-monitor: %s\n", code ? "FAILED" : "ok");
	return code;
}
