/* SPDX-License-Identifier: MIT */
/* Hca::burst(): one submission and one reap per burst, each operation
 * checked against its registration's translation at submit time. */
#include "uring_test_util.hpp"

#include <liburing.h>

#include <cerrno>

namespace mrsync::uring::test {
namespace {

using UringBurst = UringTest;

DmaOp op_write(std::uint32_t key, std::uint64_t va, std::span<const std::byte> src)
{
	/* burst() only reads a write's buffer. */
	return {key, va, const_cast<std::byte *>(src.data()), std::uint32_t(src.size()), true};
}

DmaOp op_read(std::uint32_t key, std::uint64_t va, std::span<std::byte> dst)
{
	return {key, va, dst.data(), std::uint32_t(dst.size()), false};
}

/* Every kind of refusal next to valid writes and reads, in one burst: each
 * gets its own result, refused ones write nothing, and the burst costs one
 * io_uring_submit. The control: the same valid operations through
 * write()/read() cost one submit each, so the counter does count them. */
TEST_F(UringBurst, MixedValidAndInvalidEntriesAreOneSubmission)
{
	Pages mem(4), ro(1);
	ASSERT_TRUE(mem.ok() && ro.ok());
	std::memset(mem.at(0), 0x22, mem.bytes());
	const Keys keys = register_whole(mem);
	const Extent rot[] = {{0, kPage, pin(ro.va(), kPage)}};
	auto ro_keys = hca->create(ro.va(), kPage, MRSYNC_ACCESS_REMOTE_READ, rot);
	ASSERT_TRUE(ro_keys) << ro_keys.error().message;

	const auto a = pattern(kPage, 1), b = pattern(100, 2), big = pattern(kMaxRequestBytes + 1, 3);
	std::vector<std::byte> back(64);
	const DmaOp ops[] = {
		op_write(keys.lkey, mem.va(0), a),                  /* 0: ok */
		op_write(keys.lkey + 1000, mem.va(1), b),           /* 1: unknown key */
		op_write(keys.lkey, mem.va(3) + kPage - 50, b),     /* 2: leaves the registration */
		op_write(keys.lkey, mem.va(1), {a.data(), 0}),      /* 3: empty */
		op_write(keys.lkey, mem.va(0), big),                /* 4: too large */
		op_write(ro_keys->lkey, ro.va(), b),                /* 5: no write access */
		op_read(keys.lkey, mem.va(2) + 8, back),            /* 6: ok */
		op_write(keys.lkey, mem.va(1) + 100, b),            /* 7: ok */
	};
	int results[std::size(ops)];
	const auto before = hca->stats();
	ASSERT_TRUE(hca->burst(ops, results));
	const auto after = hca->stats();

	const int want[] = {int(kPage), -EINVAL, -EFAULT, -EINVAL, -EMSGSIZE, -EACCES, 64, 100};
	for (std::size_t i = 0; i < std::size(ops); ++i)
		EXPECT_EQ(results[i], want[i]) << "operation " << i;
	EXPECT_TRUE(same(mem.page(0), a));
	EXPECT_TRUE(same({mem.at(1) + 100, 100}, b));
	EXPECT_TRUE(all_bytes({mem.at(1), 100}, std::byte{0x22})) << "refused ops wrote nothing";
	EXPECT_TRUE(all_bytes({mem.at(3), kPage}, std::byte{0x22})) << "refused ops wrote nothing";
	EXPECT_TRUE(all_bytes(back, std::byte{0x22}));
	EXPECT_EQ(after.submits - before.submits, 1u) << "one submission for the whole burst";
	EXPECT_EQ(after.dma_refused - before.dma_refused, 3u) << "key, range, access: translation";
	EXPECT_EQ(after.dma_submitted, after.dma_completed);
	std::vector<Completion> none(4);
	EXPECT_EQ(hca->poll(none), 0u) << "a burst's completions are its own";

	/* Control: one by one, each valid operation is a submission of its own. */
	const auto one_by_one = hca->stats().submits;
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(0), a), int(kPage));
	EXPECT_EQ(read_sync(*hca, keys.lkey, mem.va(2) + 8, back), 64);
	EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va(1) + 100, b), 100);
	EXPECT_EQ(hca->stats().submits - one_by_one, 3u);
}

/* More operations than the SQ (1024 entries) and the request pool hold:
 * the burst moves in ring-sized rounds, every byte lands, every read sees
 * what the CPU wrote. */
TEST_F(UringBurst, BurstLargerThanTheRingMovesInRounds)
{
	constexpr std::size_t kOps = 1500, kLen = 16;
	Pages mem(kOps * 2 * kLen / kPage + 1);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	std::vector<std::byte> src(kOps * kLen), back(kOps * kLen);
	for (std::size_t i = 0; i < src.size(); ++i)
		src[i] = std::byte(i * 7 + 1);
	const std::uint64_t out = mem.va() + kOps * kLen; /* reads come from here */
	std::memcpy(mem.at(0) + kOps * kLen, src.data(), src.size());
	std::vector<DmaOp> ops;
	for (std::size_t i = 0; i < kOps; ++i) {
		ops.push_back(op_write(keys.lkey, mem.va() + i * kLen, {src.data() + i * kLen, kLen}));
		ops.push_back(op_read(keys.lkey, out + i * kLen, {back.data() + i * kLen, kLen}));
	}
	std::vector<int> results(ops.size());
	const auto before = hca->stats().submits;
	ASSERT_TRUE(hca->burst(ops, results));
	EXPECT_TRUE(std::all_of(results.begin(), results.end(), [](int r) { return r == int(kLen); }));
	EXPECT_TRUE(same({mem.at(0), src.size()}, src));
	EXPECT_TRUE(same(back, src));
	/* 3000 operations in a few rounds: more than one submission, far
	 * fewer than one per operation. */
	const auto submits = hca->stats().submits - before;
	EXPECT_GT(submits, 1u);
	EXPECT_LE(submits, ops.size() / 100);
}

/* A round is one request: with a pool of one request, a burst of many
 * rounds still moves every operation. */
class UringOneRequest : public UringTest {
protected:
	UringOneRequest() { options_.queue_depth = 1; }
};

TEST_F(UringOneRequest, BurstOfManyRoundsNeedsOneRequest)
{
	Pages mem(16);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto data = pattern(mem.bytes(), 5);
	std::vector<DmaOp> ops;
	for (std::size_t i = 0; i < mem.bytes() / 64; ++i)
		ops.push_back(op_write(keys.lkey, mem.va() + i * 64, {data.data() + i * 64, 64}));
	std::vector<int> results(ops.size());
	ASSERT_TRUE(hca->burst(ops, results));
	EXPECT_TRUE(std::all_of(results.begin(), results.end(), [](int r) { return r == 64; }));
	EXPECT_TRUE(same({mem.at(0), mem.bytes()}, data));
	int short_results[2];
	EXPECT_FALSE(hca->burst(ops, short_results)) << "results too short is refused";
}

/* Where the kernel has READV/WRITEV_FIXED, the pieces of a burst on one
 * backing share an SQE per direction. The control: write() takes one SQE
 * per operation. */
TEST_F(UringBurst, PiecesOnOneBackingShareAnSqe)
{
	io_uring_probe *probe = io_uring_get_probe();
	const bool vectored = probe && io_uring_opcode_supported(probe, 60) &&
			      io_uring_opcode_supported(probe, 61);
	io_uring_free_probe(probe);
	Pages mem(4);
	ASSERT_TRUE(mem.ok());
	const Keys keys = register_whole(mem);
	const auto data = pattern(64 * 32, 6);
	std::vector<std::byte> back(64 * 32);
	std::vector<DmaOp> ops;
	for (std::size_t i = 0; i < 64; ++i) /* scattered: every 200 bytes */
		ops.push_back(i % 2 ? op_read(keys.lkey, mem.va() + i * 200, {back.data() + i * 32, 32})
				    : op_write(keys.lkey, mem.va() + i * 200, {data.data() + i * 32, 32}));
	std::vector<int> results(ops.size());
	const auto before = hca->stats().sqes;
	ASSERT_TRUE(hca->burst(ops, results));
	EXPECT_TRUE(std::all_of(results.begin(), results.end(), [](int r) { return r == 32; }));
	for (std::size_t i = 0; i < 64; i += 2)
		EXPECT_TRUE(same({mem.at(0) + i * 200, 32}, {data.data() + i * 32, 32})) << i;
	EXPECT_EQ(hca->stats().sqes - before, vectored ? 2u : 64u);

	const auto one_by_one = hca->stats().sqes;
	for (std::size_t i = 0; i < 8; ++i)
		EXPECT_EQ(write_sync(*hca, keys.lkey, mem.va() + i * 200, {data.data(), 32}), 32);
	EXPECT_EQ(hca->stats().sqes - one_by_one, 8u);
}

/* The operations are queued (named by key and address), then the
 * application remaps page 1 and the core repairs the translation (pin,
 * map, unpin the old page) and destroys a second registration, then the
 * burst is submitted: the write reaches the new page, the destroyed key is
 * refused. The check happens at submit time. Negative control: without the
 * map() the same burst writes into the old, still-pinned page and reports
 * success -- the application never sees the write. */
TEST_F(UringBurst, RegistrationInvalidatedBetweenQueueAndSubmit)
{
	for (const bool repair : {true, false}) {
		SCOPED_TRACE(repair ? "translation repaired" : "negative control: stale translation");
		Pages mem(2), other(1);
		ASSERT_TRUE(mem.ok() && other.ok());
		const BackingId old = pin(mem.va(), 2 * kPage);
		const Extent whole[] = {{0, 2 * kPage, old}};
		const Keys keys = create(mem.va(), 2 * kPage, whole);
		const Keys gone = register_whole(other);
		const auto data = pattern(kPage, 9);
		const DmaOp ops[] = {op_write(keys.lkey, mem.va(1), data),
				     op_write(gone.lkey, other.va(), data)};

		ASSERT_TRUE(mem.remap(1));
		if (repair) {
			const Extent split[] = {{0, kPage, old}, {kPage, kPage, pin(mem.va(1), kPage)}};
			ASSERT_TRUE(hca->map(keys, split));
			ASSERT_TRUE(hca->fence());
		}
		hca->destroy(gone);

		int results[2];
		ASSERT_TRUE(hca->burst(ops, results));
		EXPECT_EQ(results[0], int(kPage)) << "the device reports success either way";
		EXPECT_EQ(results[1], -EINVAL) << "the destroyed key is refused";
		EXPECT_TRUE(all_bytes(other.page(0), std::byte{0}));
		if (repair)
			EXPECT_TRUE(same(mem.page(1), data)) << "the write reaches the new page";
		else
			EXPECT_TRUE(all_bytes(mem.page(1), std::byte{0}))
				<< "control: a stale translation should lose the write";
		hca->destroy(keys);
	}
}

/* A retired backing named by the translation at submit time faults the
 * operation, not the burst. Negative control: the same operation one step
 * earlier, while the backing is live, succeeds. */
TEST_F(UringBurst, UnpinnedBackingFaultsOnlyItsOperation)
{
	Pages mem(2);
	ASSERT_TRUE(mem.ok());
	const BackingId b0 = pin(mem.va(0), kPage), b1 = pin(mem.va(1), kPage);
	const Extent t[] = {{0, kPage, b0}, {kPage, kPage, b1}};
	const Keys keys = create(mem.va(), 2 * kPage, t);
	const auto data = pattern(kPage, 4);
	const DmaOp ops[] = {op_write(keys.lkey, mem.va(0), data),
			     op_write(keys.lkey, mem.va(1), data)};
	int results[2];
	ASSERT_TRUE(hca->burst(ops, results));
	EXPECT_EQ(results[1], int(kPage)) << "control: live backing";
	hca->unpin(b1);
	ASSERT_TRUE(hca->burst(ops, results));
	EXPECT_EQ(results[0], int(kPage));
	EXPECT_EQ(results[1], -EFAULT);
}

} // namespace
} // namespace mrsync::uring::test
