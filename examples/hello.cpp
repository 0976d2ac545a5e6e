// SPDX-License-Identifier: MIT
// The C++ API (mrsync.hpp, C++17): a Context, a Registration that puts
// itself back, Result<T> for errors.
#include <cstdio>
#include <vector>

#include <mrsync/mrsync.hpp>

int main()
{
	auto ctx = mrsync::Context::create();
	if (!ctx) {
		std::fprintf(stderr, "hello-cpp: %s\n", ctx.error().message.c_str());
		return 1;
	}
	std::vector<char> buf(256 << 10);
	for (int i = 0; i < 2; ++i) {
		auto reg = ctx->get(buf.data(), buf.size());
		if (!reg) {
			std::fprintf(stderr, "hello-cpp: get: %s\n", reg.error().message.c_str());
			return 1;
		}
		std::printf("hello-cpp: %zu bytes -> lkey %u (registration of %llu bytes)\n",
			    buf.size(), reg->lkey(), static_cast<unsigned long long>(reg->length()));
	} // each Registration is put here
	const mrsync_stats s = ctx->stats();
	std::printf("hello-cpp: %llu hit(s), %llu miss(es)\n",
		    static_cast<unsigned long long>(s.hits), static_cast<unsigned long long>(s.misses));
	return s.hits >= 1 ? 0 : 1;
}
