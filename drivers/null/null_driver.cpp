/* SPDX-License-Identifier: MIT */
/* The "null" driver: pins nothing and moves no data. A registration through
 * it costs nothing, so a benchmark that uses it times the cache machinery
 * alone (the same role as UCX's dummy memory domain or DPDK's net_null).
 * Never use it for DMA: there is no device behind it. */
#include <mrsync/driver.hpp>

#include <cerrno>
#include <cstdint>
#include <vector>

namespace mrsync {
namespace {

class NullDriver final : public Driver {
public:
	std::string_view name() const noexcept override { return "null"; }

	DriverCaps caps() const noexcept override
	{
		return DriverCaps{4096, 1ull << 40, UINT32_MAX - 1, true};
	}

	Result<BackingId> pin(std::uint64_t, std::uint64_t len) override
	{
		if (!len)
			return make_error(EINVAL, "null: len is 0");
		return next_backing_++;
	}

	void unpin(BackingId) noexcept override {}

	Result<Keys> create(std::uint64_t, std::uint64_t, std::uint32_t,
			    std::span<const Extent>) override
	{
		const std::uint32_t key = next_key_++;
		return Keys{key, key};
	}

	Result<Keys> map(Keys keys, std::span<const Extent>) override { return keys; }
	void destroy(Keys) noexcept override {}
	Status fence() override { return {}; }
	void abandon() noexcept override {}

private:
	BackingId next_backing_ = 0;
	std::uint32_t next_key_ = 1;
};

bool always(std::string &) { return true; }

Result<std::unique_ptr<Driver>> make(const DriverConfig &)
{
	return std::unique_ptr<Driver>(new NullDriver());
}

} // namespace

MRSYNC_REGISTER_DRIVER((DriverFactory{"null", always, make}))

} // namespace mrsync
