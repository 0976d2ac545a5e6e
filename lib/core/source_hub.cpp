/* SPDX-License-Identifier: MIT */
/* The shared sources (source_hub.hpp): every call into a source under one
 * lock, and the fan-out that makes a drain by one client lose nothing for the
 * others. */
#include "source_hub.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "format.hpp"
#include "range_set.hpp"

namespace mrsync::detail {

namespace {

Error abandoned_error()
{
	return Error{ENODEV, "event sources abandoned in a fork child (a context or watcher of "
			     "the parent: create a new one)"};
}

/* Sets an eventfd readable (non-blocking: a saturated counter is readable
 * anyway). */
void signal(const UniqueFd &fd) noexcept
{
	if (!fd)
		return;
	const std::uint64_t one = 1;
	[[maybe_unused]] auto n = ::write(fd.get(), &one, sizeof one);
}

void clear(const UniqueFd &fd) noexcept
{
	if (!fd)
		return;
	std::uint64_t value;
	[[maybe_unused]] auto n = ::read(fd.get(), &value, sizeof value);
}

/* Appends `more` to `kept`; past `limit` merges the whole list first.
 * @return false if even merged it does not fit (the caller then says
 * "everything"). */
bool keep(std::vector<Range> &kept, const std::vector<Range> &more, std::size_t limit)
{
	kept.insert(kept.end(), more.begin(), more.end());
	if (kept.size() <= limit)
		return true;
	RangeSet merged;
	for (const Range &r : kept)
		merged.add(r);
	kept = merged.intersect({0, ~std::uint64_t(0)});
	return kept.size() <= limit;
}

} // namespace

SourceHub::SourceHub(std::vector<std::unique_ptr<EventSource>> sources, Fanout fanout) noexcept
	: sources_(std::move(sources)), fanout_(fanout)
{
}

SourceHub::~SourceHub() = default;

ManualInput *SourceHub::manual() const noexcept
{
	for (const auto &source : sources_)
		if (auto *manual = dynamic_cast<ManualInput *>(source.get()))
			return manual;
	return nullptr;
}

SourceHub::ClientId SourceHub::join()
{
	std::lock_guard guard(mu_);
	auto free = std::find_if(clients_.begin(), clients_.end(),
				 [](const Client &c) { return !c.live; });
	if (free == clients_.end())
		free = clients_.emplace(clients_.end());
	*free = Client{};
	free->live = true;
	return ClientId(free - clients_.begin());
}

void SourceHub::leave(ClientId client) noexcept
{
	std::lock_guard guard(mu_);
	clients_[client] = Client{};
}

Result<std::uint64_t> SourceHub::watch(std::size_t i, std::uint64_t va, std::uint64_t len)
{
	std::lock_guard guard(mu_);
	if (abandoned_)
		return abandoned_error();
	return sources_[i]->watch(va, len);
}

void SourceHub::unwatch(std::size_t i, std::uint64_t handle) noexcept
{
	std::lock_guard guard(mu_);
	if (!abandoned_)
		sources_[i]->unwatch(handle);
}

Status SourceHub::prepare_pin(std::size_t i, std::uint64_t handle, Range range)
{
	std::lock_guard guard(mu_);
	if (abandoned_)
		return abandoned_error();
	return sources_[i]->prepare_pin(handle, range);
}

void SourceHub::keep_locked(Client &c, const std::vector<Range> &changed,
			    const std::vector<Range> &unsettled, Drained flags) noexcept
{
	c.flags.overflow |= flags.overflow;
	c.flags.unsettled_lost |= flags.unsettled_lost;
	/* Bounded: merged past the limit, and if that is not enough,
	 * "everything changed" says it all. */
	if (c.flags.overflow || !keep(c.changed, changed, kMaxPending)) {
		c.flags.overflow = true;
		c.changed.clear();
	}
	if (c.flags.unsettled_lost || !keep(c.unsettled, unsettled, kMaxPending)) {
		c.flags.unsettled_lost = true;
		c.unsettled.clear();
	}
}

SourceHub::Drained SourceHub::drain(ClientId client, std::vector<Range> &changed,
				    std::vector<Range> &unsettled)
{
	std::lock_guard guard(mu_);
	if (abandoned_)
		return {};
	Client &me = clients_[client];
	/* Clear the wake-up before taking the ranges: a fan-out after this
	 * leaves it readable (never missed, at most spurious). */
	clear(me.wake);
	std::vector<Range> fresh, fresh_unsettled;
	Drained found;
	for (auto &source : sources_) {
		found.overflow |= source->drain(fresh);
		found.unsettled_lost |= source->drain_unsettled(fresh_unsettled);
	}
	const bool something = !fresh.empty() || !fresh_unsettled.empty() || found.overflow ||
			       found.unsettled_lost;
	if (something && fanout_ == Fanout::on)
		for (Client &other : clients_)
			if (other.live && &other != &me) {
				keep_locked(other, fresh, fresh_unsettled, found);
				signal(other.wake);
			}
	/* Ours: what others took for us first, then what we took. */
	const Drained mine{me.flags.overflow || found.overflow,
			   me.flags.unsettled_lost || found.unsettled_lost};
	changed.insert(changed.end(), me.changed.begin(), me.changed.end());
	changed.insert(changed.end(), fresh.begin(), fresh.end());
	unsettled.insert(unsettled.end(), me.unsettled.begin(), me.unsettled.end());
	unsettled.insert(unsettled.end(), fresh_unsettled.begin(), fresh_unsettled.end());
	me.changed.clear();
	me.unsettled.clear();
	me.flags = {};
	return mine;
}

Result<int> SourceHub::enable_wakeup(std::size_t i)
{
	std::lock_guard guard(mu_);
	if (abandoned_)
		return abandoned_error();
	return sources_[i]->enable_wakeup();
}

Result<int> SourceHub::client_wakeup(ClientId client)
{
	std::lock_guard guard(mu_);
	Client &me = clients_[client];
	if (!me.wake) {
		UniqueFd fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
		if (!fd) {
			const int err = errno;
			return make_error(err, "watcher: eventfd: " + errno_text(err));
		}
		me.wake = std::move(fd);
		signal(me.wake); /* readable once: what was kept before is not missed */
	}
	return me.wake.get();
}

void SourceHub::abandon() noexcept
{
	std::lock_guard guard(mu_);
	if (abandoned_)
		return;
	abandoned_ = true;
	for (auto &source : sources_)
		source->abandon();
	for (Client &c : clients_)
		c.changed.clear(), c.unsettled.clear();
}

} // namespace mrsync::detail
