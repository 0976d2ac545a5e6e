/* SPDX-License-Identifier: MIT */
/* mrsync-bench: the exact-match cache many applications write by hand --
 * (addr, len) -> key in a std::unordered_map with a boost-style
 * hash_combine. It hits only on a pair it has seen before, never checks
 * whether the memory changed, and is not thread-safe (no lock is timed). */
#ifndef MRSYNC_BENCH_EXACT_CACHE_HPP
#define MRSYNC_BENCH_EXACT_CACHE_HPP

#include <cstdint>
#include <functional>
#include <unordered_map>

namespace mrsync::bench {

class ExactCache {
public:
	void insert(const void *addr, std::uint64_t len, std::uint32_t key)
	{
		map_.emplace(Key{reinterpret_cast<std::uintptr_t>(addr), len}, key);
	}
	/** The key cached for exactly (addr, len), or nullptr. */
	const std::uint32_t *find(const void *addr, std::uint64_t len) const
	{
		auto it = map_.find(Key{reinterpret_cast<std::uintptr_t>(addr), len});
		return it == map_.end() ? nullptr : &it->second;
	}
	std::size_t size() const noexcept { return map_.size(); }

private:
	struct Key {
		std::uintptr_t addr;
		std::uint64_t len;
		bool operator==(const Key &) const = default;
	};
	struct Hash {
		std::size_t operator()(const Key &k) const noexcept
		{
			std::size_t h = std::hash<std::uintptr_t>{}(k.addr);
			h ^= std::hash<std::uint64_t>{}(k.len) + 0x9e3779b97f4a7c15ull + (h << 6) +
			     (h >> 2);
			return h;
		}
	};
	std::unordered_map<Key, std::uint32_t, Hash> map_;
};

} // namespace mrsync::bench

#endif
