/* SPDX-License-Identifier: MIT */
/* The engine's resources: the ring with its sparse buffer table, the staging
 * memfd (the wire) and its mapping, the run-time probe, and the small
 * fixed-size containers the data path uses instead of allocating. */
#include "engine_pvt.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <utility>

namespace mrsync::dma {

namespace detail {

int Ring::init(unsigned entries, io_uring_params &params) noexcept
{
	int rc = io_uring_queue_init_params(entries, &ring_, &params);
	live_ = rc == 0;
	return rc;
}

void Ring::close() noexcept
{
	/* io_uring_queue_exit() unmaps the rings and closes the fd; it never
	 * unregisters anything (we do not register the ring fd), so a fork
	 * child may call it on the parent's ring. */
	if (std::exchange(live_, false))
		io_uring_queue_exit(&ring_);
}

ChunkMap::ChunkMap(std::uint32_t chunks) : words_((chunks + 63) / 64), chunks_(chunks) {}

bool ChunkMap::alloc(std::uint32_t n, std::uint32_t &first) noexcept
{
	std::uint32_t run = 0;
	for (std::uint32_t i = 0; i < chunks_; ++i) {
		if (i % 64 == 0 && words_[i / 64] == ~0ull) {
			run = 0;
			i += 63;
			continue;
		}
		if (used(i)) {
			run = 0;
			continue;
		}
		if (++run == n) {
			first = i + 1 - n;
			set(first, n, true);
			return true;
		}
	}
	return false;
}

void ChunkMap::free(std::uint32_t first, std::uint32_t n) noexcept
{
	set(first, n, false);
}

void ChunkMap::set(std::uint32_t first, std::uint32_t n, bool on) noexcept
{
	for (std::uint32_t i = first; i < first + n; ++i) {
		if (on)
			words_[i / 64] |= 1ull << (i % 64);
		else
			words_[i / 64] &= ~(1ull << (i % 64));
	}
}

void IndexFifo::push(std::uint32_t v) noexcept
{
	buf_[(head_ + count_++) % buf_.size()] = v;
}

std::uint32_t IndexFifo::take(std::uint32_t i) noexcept
{
	const std::uint32_t v = at(i);
	if (i == 0) {
		head_ = (head_ + 1) % buf_.size();
	} else {
		for (std::uint32_t j = i; j + 1 < count_; ++j)
			buf_[(head_ + j) % buf_.size()] = buf_[(head_ + j + 1) % buf_.size()];
	}
	--count_;
	return v;
}

} // namespace detail

namespace {

using detail::fmt;

/* Roomy CQ: tags and multi-SQE requests can outnumber the SQ; overflow is
 * kept by the kernel (IORING_FEAT_NODROP) but costs an extra syscall. */
constexpr unsigned kCqEntries = 8192;
constexpr std::uint32_t kNeededFeatures =
	IORING_FEAT_NODROP | IORING_FEAT_EXT_ARG | IORING_FEAT_RSRC_TAGS;

Status missing_features(std::uint32_t have)
{
	if ((have & kNeededFeatures) == kNeededFeatures)
		return {};
	return make_error(EOPNOTSUPP,
			  fmt("io_uring lacks features %#x (NODROP, EXT_ARG, RSRC_TAGS: "
			       "Linux 5.13 or later)",
			       kNeededFeatures & ~have));
}

} // namespace

Engine::Impl::Impl(const EngineOptions &opts, Translator &t)
	: options(opts), translator(t), done(opts.queue_depth), chunks(std::uint32_t(opts.staging_bytes / detail::kChunk)),
	  reqs(new detail::Request[opts.queue_depth]), slots(new detail::Slot[kMaxBackings])
{
	/* Stacks popped from the back: low indices are used first, which keeps
	 * slot numbers small and readable in tests and traces. */
	free_reqs.reserve(opts.queue_depth);
	for (std::uint32_t i = opts.queue_depth; i-- > 0;)
		free_reqs.push_back(i);
	free_slots.reserve(kMaxBackings);
	for (std::uint32_t i = kMaxBackings; i-- > 0;)
		free_slots.push_back(i);
	/* A request of kMaxRequestBytes split at every page, and then some:
	 * translating allocates nothing on the data path. */
	pieces.reserve(kMaxRequestBytes / kPageBytes + 16);
}

Status Engine::Impl::open()
{
	io_uring_params params{};
	/* SUBMIT_ALL: a failing SQE must not leave the rest of a request in the
	 * SQ. No COOP/DEFER_TASKRUN: completions may be reaped by any thread,
	 * so the kernel must not wait for the submitter to enter it again. */
	params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
	params.cq_entries = kCqEntries;
	if (int rc = ring.init(detail::kSqEntries, params); rc < 0)
		return make_error(-rc, fmt("io_uring_setup: %s", detail::errno_text(-rc).c_str()));
	if (auto st = missing_features(params.features); !st)
		return st;
	/* Vectored fixed-buffer I/O (Linux 6.15) lets burst() move many
	 * operations on one backing with one SQE; without it, one SQE each. */
	if (io_uring_probe *probe = io_uring_get_probe_ring(ring.get())) {
		vectored_fixed = io_uring_opcode_supported(probe, detail::kOpReadvFixed) &&
				 io_uring_opcode_supported(probe, detail::kOpWritevFixed);
		io_uring_free_probe(probe);
	}
	if (int rc = io_uring_register_buffers_sparse(ring.get(), kMaxBackings); rc < 0)
		return make_error(-rc, fmt("registering %u sparse buffer slots: %s", kMaxBackings,
					    detail::errno_text(-rc).c_str()));

	memfd = detail::UniqueFd(::memfd_create("mrsync-uring-wire", MFD_CLOEXEC));
	if (memfd.get() < 0)
		return make_error(errno, fmt("memfd_create: %s", detail::errno_text(errno).c_str()));
	if (::ftruncate(memfd.get(), off_t(options.staging_bytes)) < 0)
		return make_error(errno, fmt("sizing the %llu-byte staging memfd: %s",
					      (unsigned long long)options.staging_bytes,
					      detail::errno_text(errno).c_str()));
	void *addr = ::mmap(nullptr, options.staging_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
			    memfd.get(), 0);
	if (addr == MAP_FAILED)
		return make_error(errno, fmt("mapping the staging memfd: %s", detail::errno_text(errno).c_str()));
	staging = detail::UniqueMmap(addr, options.staging_bytes);

	/* The wire is fixed file 0: no fd lookup per SQE. */
	const int fd = memfd.get();
	if (int rc = io_uring_register_files(ring.get(), &fd, 1); rc < 0)
		return make_error(-rc, fmt("registering the staging memfd: %s", detail::errno_text(-rc).c_str()));
	return {};
}

void Engine::Impl::close_without_unregistering() noexcept
{
	abandoned = true;
	ring.close();
	staging.reset();
	memfd.reset();
}

Engine::Impl::~Impl()
{
	if (abandoned || !ring.live())
		return;
	/* Let in-flight DMA finish into memory that is still ours, then drop
	 * every pin now rather than whenever the kernel's ring teardown runs. */
	(void)fence_until(detail::Clock::now() + std::chrono::seconds(10));
	io_uring_unregister_buffers(ring.get());
}

Engine::Engine(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::create(const EngineOptions &options,
					       Translator &translator)
{
	if (options.queue_depth == 0 || options.queue_depth > (1u << 20))
		return make_error(EINVAL, fmt("%s: queue_depth %u is not in [1, 2^20]", options.name,
					       options.queue_depth));
	if (options.staging_bytes % detail::kChunk || options.staging_bytes < kMaxRequestBytes)
		return make_error(EINVAL, fmt("%s: staging_bytes %llu is not a multiple of "
					       "64 KiB of at least %llu",
					       options.name, (unsigned long long)options.staging_bytes,
					       (unsigned long long)kMaxRequestBytes));
	auto impl = std::make_unique<Impl>(options, translator);
	if (auto st = impl->open(); !st)
		return std::move(st).error();
	return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

void Engine::abandon() noexcept
{
	impl_->close_without_unregistering();
}

bool Engine::abandoned() const noexcept
{
	return impl_->abandoned;
}

bool Engine::available(std::string &why)
{
	detail::Ring ring;
	io_uring_params params{};
	if (int rc = ring.init(4, params); rc < 0) {
		why = fmt("io_uring_setup: %s (no io_uring in this kernel, "
			   "kernel.io_uring_disabled, or a seccomp filter)",
			   detail::errno_text(-rc).c_str());
		return false;
	}
	if (auto st = missing_features(params.features); !st) {
		why = st.error().message;
		return false;
	}
	if (int rc = io_uring_register_buffers_sparse(ring.get(), 1); rc < 0) {
		why = fmt("io_uring sparse buffer registration: %s (Linux 5.19 or later)",
			   detail::errno_text(-rc).c_str());
		return false;
	}
	return true;
}

} // namespace mrsync::dma
