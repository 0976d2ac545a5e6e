/* SPDX-License-Identifier: MIT */
/* The MTT mkey model (mtt_mkey_model.hpp). */
#include "mtt_mkey_model.hpp"

#include <cerrno>
#include <cinttypes>

#include <mrsync/mrsync.h>

#include "format.hpp"

namespace mrsync::mlx5 {

using detail::fmt;

Error MttMkeyModel::unsupported(const char *op)
{
	return make_error(EOPNOTSUPP, fmt("mtt-mkey-model: %s: not in VFIO mode", op));
}

Result<std::uint32_t> MttMkeyModel::create_mtt_mkey(std::uint64_t va, std::uint64_t iova,
						    std::uint64_t len, std::uint32_t access)
{
	if (va % kPage || iova % kPage || len % kPage || !len)
		return make_error(EINVAL, fmt("mtt-mkey-model: create_mtt_mkey va 0x%" PRIx64
					      " iova 0x%" PRIx64 " len 0x%" PRIx64 ": not "
					      "page-aligned", va, iova, len));
	std::lock_guard lock(mu_);
	if (next_index_ >= (1u << 24))
		return make_error(ENOSPC, "mtt-mkey-model: mkey indices exhausted");
	Mkey m{va, len, access, {}};
	m.mtt.reserve(len / kPage);
	for (std::uint64_t at = 0; at < len; at += kPage)
		m.mtt.push_back(iova + at);
	mtt_written_ += m.mtt.size();
	++created_;
	const std::uint32_t key = next_index_++ << 8;
	mkeys_.emplace(key, std::move(m));
	return key;
}

Status MttMkeyModel::destroy_mkey(std::uint32_t key)
{
	std::lock_guard lock(mu_);
	if (!mkeys_.erase(key))
		return make_error(EINVAL, fmt("mtt-mkey-model: destroy_mkey: unknown key %#x", key));
	return {};
}

/* The IOVA of [va, va + len), which must lie inside one page of the mkey. */
Result<std::uint64_t> MttMkeyModel::translate_locked(std::uint32_t key, std::uint64_t va,
						     std::uint64_t len) const
{
	auto it = mkeys_.find(key);
	if (it == mkeys_.end())
		return make_error(EACCES, fmt("mtt-mkey-model: key %#x: no such mkey", key));
	const Mkey &m = it->second;
	if (va < m.start || len > m.len || va - m.start > m.len - len)
		return make_error(EACCES, fmt("mtt-mkey-model: key %#x: [0x%" PRIx64 ", +0x%" PRIx64
					      ") outside [0x%" PRIx64 ", +0x%" PRIx64 ")", key, va,
					      len, m.start, m.len));
	const std::uint64_t off = va - m.start;
	return m.mtt[off / kPage] + off % kPage;
}

Result<std::uint64_t> MttMkeyModel::translate(std::uint32_t key, std::uint64_t va) const
{
	std::lock_guard lock(mu_);
	return translate_locked(key, va, 1);
}

Result<std::size_t> MttMkeyModel::write(std::uint32_t key, std::uint64_t va,
					std::span<const std::byte> bytes)
{
	std::lock_guard lock(mu_);
	/* The whole request first: a refused request moves nothing. */
	if (auto whole = translate_locked(key, va, bytes.size()); !whole)
		return std::move(whole).error();
	if (!(mkeys_.at(key).access & MRSYNC_ACCESS_REMOTE_WRITE))
		return make_error(EACCES, fmt("mtt-mkey-model: key %#x: no REMOTE_WRITE", key));
	for (std::size_t done = 0; done < bytes.size();) {
		const std::uint64_t at = va + done;
		const std::size_t n = std::min<std::uint64_t>(bytes.size() - done,
							      kPage - at % kPage);
		auto iova = translate_locked(key, at, n); /* inside: checked above */
		if (auto ok = dma_(iova.value(), bytes.subspan(done, n)); !ok)
			return std::move(ok).error();
		done += n;
	}
	return bytes.size();
}

std::uint64_t MttMkeyModel::mkeys_created() const
{
	std::lock_guard lock(mu_);
	return created_;
}

std::uint64_t MttMkeyModel::mtt_entries_written() const
{
	std::lock_guard lock(mu_);
	return mtt_written_;
}

} // namespace mrsync::mlx5
