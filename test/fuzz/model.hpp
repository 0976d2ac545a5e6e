// What the C ABI (mrsync.h) and the uring driver's header (mrsync/uring.hpp)
// promise, as checks against the arena's model. Only documented promises are
// checked; where the documents are silent the model accepts either answer
// (see test/fuzz/README.md for the list and where each rule is written).
#ifndef MRSYNC_FUZZ_MODEL_HPP
#define MRSYNC_FUZZ_MODEL_HPP

#include <cstdint>
#include <string>
#include <set>
#include <vector>

#include <mrsync/mrsync.h>

#include "arena.hpp"

namespace mrsync::fuzz {

/** A registration the program still holds (no mrsync_put yet). */
struct Held {
	mrsync_reg reg;
	std::uint64_t addr, len; /* what was asked for */
	std::uint32_t access;
};

class Model {
public:
	Model(Arena &arena, const mrsync_params &params);

	/** Everything the failure report prints: one line per operation. */
	void trace(const char *fmt, ...) __attribute__((format(printf, 2, 3)));
	/** Prints the operations so far (MRSYNC_FUZZ_TRACE=1). */
	void print_trace() const;
	/** Reports a broken promise with the input's operations so far, and
	 *  aborts (libFuzzer saves the input). */
	[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 2, 3)));

	/** Checks the answer of mrsync_get() or mrsync_hint() (`reg` is NULL for
	 *  a hint) against the model; a success also ends `pending`. */
	void check_lookup(const char *call, int rc, std::uint64_t addr, std::uint64_t len,
			  std::uint32_t access, const mrsync_reg *reg);
	/** A call that must fail with -EINVAL. */
	void check_einval(const char *call, int rc);
	/** The program told the manual source about a change (rc: the answer
	 *  of mrsync_notify_unmap); gen_before: mrsync_generation() before. */
	void check_notify(mrsync_ctx *ctx, int rc, std::uint64_t gen_before);
	/** mrsync_resync() returned rc. */
	void check_resync(int rc);
	/** Stats and mrsync_for_each_region() against the model and against the
	 *  previous snapshot; run after every operation. */
	void check_state(mrsync_ctx *ctx);

	/** Whether a change was notified that no successful lookup or resync
	 *  has applied yet: DMA through a held key is then the application's
	 *  own race, so nothing is asserted about it. */
	bool pending() const { return pending_; }

	/** Entries the program notified a change of. A hint pins no page that
	 *  changed until some get has pinned it again (mrsync.h, mrsync_hint);
	 *  whether one has, in a registration that eviction left alone, is more
	 *  than the model tracks, so a get after a hint may miss on them. */
	void changed(std::uint64_t addr, std::uint64_t len);
	bool ever_changed(std::uint64_t addr) const
	{
		return changed_entries_.contains(addr & ~(entry_ - 1));
	}
	std::vector<Held> &held() { return held_; }
	const mrsync_stats &last_stats() const { return last_; }

private:
	enum class Expect { einval, efault, ok, ok_or_efault };
	Expect expect(std::uint64_t addr, std::uint64_t len, std::uint32_t access) const;
	bool enospc_allowed(std::uint64_t addr, std::uint64_t len) const;

	Arena &arena_;
	std::uint32_t max_regions_;
	std::uint64_t max_bytes_;
	std::uint64_t entry_;
	bool may_hit_memlock_;

	std::vector<Held> held_;
	std::set<std::uint64_t> changed_entries_;
	bool pending_ = false;
	std::uint64_t lookups_ = 0, lookups_ok_ = 0, notifies_ = 0;
	std::uint64_t generation_ = 0;
	mrsync_stats last_{};
	std::string trace_;
};

} // namespace mrsync::fuzz

#endif
