/* SPDX-License-Identifier: MIT */
/* A Driver that forwards every call to a real driver it owns: the base of the
 * tests' decorators, which override the one call they change. Not a model:
 * every call it does not override reaches the real driver. Same thread
 * safety as the driver it wraps. */
#ifndef MRSYNC_TEST_FORWARDING_DRIVER_HPP
#define MRSYNC_TEST_FORWARDING_DRIVER_HPP

#include <memory>

#include <mrsync/driver.hpp>

namespace mrsync::test {

class ForwardingDriver : public Driver {
public:
	explicit ForwardingDriver(std::unique_ptr<Driver> inner) : inner_(std::move(inner)) {}

	std::string_view name() const noexcept override { return inner_->name(); }
	DriverCaps caps() const noexcept override { return inner_->caps(); }
	Result<BackingId> pin(std::uint64_t va, std::uint64_t len) override
	{
		return inner_->pin(va, len);
	}
	void unpin(BackingId b) noexcept override { inner_->unpin(b); }
	Result<Keys> create(std::uint64_t va, std::uint64_t len, std::uint32_t access,
			    std::span<const Extent> t) override
	{
		return inner_->create(va, len, access, t);
	}
	Result<Keys> map(Keys keys, std::span<const Extent> t) override { return inner_->map(keys, t); }
	Result<Keys> map_changed(Keys keys, std::span<const Extent> t,
				 std::span<const Range> changed) override
	{
		return inner_->map_changed(keys, t, changed);
	}
	void destroy(Keys keys) noexcept override { inner_->destroy(keys); }
	Status fence() override { return inner_->fence(); }
	void abandon() noexcept override { inner_->abandon(); }

protected:
	Driver &inner() { return *inner_; }

private:
	std::unique_ptr<Driver> inner_;
};

} // namespace mrsync::test

#endif
