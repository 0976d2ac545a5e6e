/* SPDX-License-Identifier: MIT */
/* The manual event source (MRSYNC_SOURCE_MANUAL): the application reports
 * its own unmaps and remaps (mrsync_notify_unmap, which reaches notify()
 * through the ManualInput interface); watches are bookkeeping only, since
 * nothing is armed in the kernel. */
#include <mrsync/event_buffer.hpp>
#include <mrsync/mrsync.h>

#include <map>
#include <mutex>
#include <new>

#include "address_space.hpp"

namespace mrsync {
namespace {

class ManualSource final : public BufferedEventSource, public ManualInput {
public:
	explicit ManualSource(const SourceConfig &config)
		: BufferedEventSource(config.ring_entries)
	{
	}

	std::string_view name() const noexcept override { return "manual"; }

	/* Thread safety: any thread; appends under the buffer lock only. */
	Status notify(Range changed) override /* ManualInput */
	{
		if (changed.start >= changed.end)
			return make_error(EINVAL, "notify: " + detail::format_range(changed) +
							  (changed.start == changed.end
								   ? " is empty"
								   : " ends before it starts"));
		events().append(changed);
		return {};
	}

	/* Thread safety: any thread; takes the watch-table lock. */
	Result<std::uint64_t> watch(std::uint64_t va, std::uint64_t len) override
	{
		auto range = detail::checked_range(va, len, "watch");
		if (!range)
			return std::move(range).error();
		std::lock_guard lock(mu_);
		const std::uint64_t handle = next_handle_++;
		watches_.emplace(handle, *range);
		return handle;
	}

	/* Thread safety: any thread; takes the watch-table lock. */
	void unwatch(std::uint64_t handle) noexcept override
	{
		std::lock_guard lock(mu_);
		watches_.erase(handle);
	}

	/* Nothing to let go of: no kernel object, no thread. */
	void abandon() noexcept override {}

private:
	std::mutex mu_; /* guards the watch table */
	std::map<std::uint64_t, Range> watches_;
	std::uint64_t next_handle_ = 1;
};

bool manual_available(std::string &) { return true; }

Result<std::unique_ptr<EventSource>> manual_create(const SourceConfig &config)
{
	try {
		return std::unique_ptr<EventSource>(std::make_unique<ManualSource>(config));
	} catch (const std::bad_alloc &) {
		return make_error(ENOMEM, "manual source: no memory for the event buffer");
	}
}

const SourceFactory manual_factory{
	.name = "manual",
	.kind = MRSYNC_SOURCE_MANUAL,
	.available = manual_available,
	.create = manual_create,
};

} // namespace
} // namespace mrsync

MRSYNC_REGISTER_SOURCE(mrsync::manual_factory)
