#!/usr/bin/env python3
"""Writes the seed corpus of the mrsync fuzz target (test/fuzz/corpus/).

Each seed is a small hand-made scenario in the target's input format
(README.md, "Input format"); libFuzzer mutates them from there. Run it again
after changing the format:  test/fuzz/make_corpus.py
"""
import os

# Opcodes, in the order of `enum Op` in mrsync_fuzz.cc.
(GET, GET_HOLD, PUT, HINT, NOTIFY, RESYNC, COMPACT, MAP_FRESH, UNMAP, MOVE,
 AWAY_AND_BACK, DROP, CPU_WRITE, DMA_HELD, BAD_ARGS) = range(15)

ALL = 7  # MRSYNC_ACCESS_ALL
LOCAL_WRITE = 1


def header(max_regions=0, ring=0, byte_limit_pages=0, threshold=0, entry=0):
    """ring: index into {0, 1, 2, 8}; threshold: index into {default,
    only on request, 1 byte}; entry: index into {0 x5, 4096, 8192, 16384}."""
    limit = 0 if not byte_limit_pages else 3 + 4 * (byte_limit_pages - 1)
    return [max_regions, ring, limit, threshold | entry << 4]


def rng(page, pages=1, head=0, tail=0):
    """A byte range: first page, page count (1..8), 16-byte units left out
    of the first and of the last page."""
    return [page, pages - 1, head, tail]


def get(page, pages=1, access=ALL, head=0, tail=0, hold=False):
    return [GET_HOLD if hold else GET] + rng(page, pages, head, tail) + [access]


def pages_op(op, first, count=1):
    return [op, first, count - 1]


SEEDS = {
    # a miss, a hit, a sub-page range
    "basic-get": header() + get(0, 4) + get(0, 4) + get(1, 1, head=8, tail=200),
    # a page replaced under a held registration; the next get re-pins it
    "remap-under-held": header()
    + get(2, 4, hold=True)
    + pages_op(MAP_FRESH, 3)
    + get(3)
    + [DMA_HELD, 0, PUT, 0],
    # a hole fails the whole range, not the mapped part; back once remapped
    "unmap-then-get": header()
    + get(10, 4)
    + pages_op(UNMAP, 11)
    + get(10, 4)
    + get(10)
    + pages_op(MAP_FRESH, 11)
    + get(10, 4),
    # pages move to another place with their contents; the old place is a hole
    "mremap-move": header()
    + [CPU_WRITE] + rng(20, 2)
    + get(20, 2)
    + [MOVE, 20, 1, 40]
    + get(40, 2)
    + get(20),
    # the same physical page leaves and comes back
    "away-and-back": header() + get(30) + pages_op(AWAY_AND_BACK, 30) + get(30),
    # MADV_DONTNEED under a held registration, then DMA through its key
    "madvise-held": header()
    + get(8, 8, hold=True)
    + pages_op(DROP, 10, 2)
    + [RESYNC, DMA_HELD, 0]
    + get(10)
    + [DMA_HELD, 0],
    # max_regions 2: eviction, -ENOSPC while everything is held, room after a put
    "eviction": header(max_regions=2)
    + get(0, hold=True)
    + get(4, hold=True)
    + get(8, hold=True)
    + [PUT, 0]
    + get(8)
    + get(12)
    + get(16),
    # a one-entry event ring overflows: full resyncs
    "ring-overflow": header(ring=1)
    + get(0, 8, hold=True)
    + pages_op(MAP_FRESH, 1)
    + pages_op(DROP, 3)
    + pages_op(UNMAP, 5)
    + get(0, 2)
    + [DMA_HELD, 0],
    # stale pinned bytes, then compaction on request
    "compact": header(threshold=1)
    + get(16, 8)
    + pages_op(DROP, 18)
    + get(18)
    + [COMPACT]
    + get(16, 8),
    # a hint, then hits inside it
    "hint": header() + [HINT] + rng(32, 8) + [ALL] + get(33) + get(38, 2),
    # every kind of bad argument
    "bad-args": header()
    + sum(([BAD_ARGS, kind] + rng(5) + ([2, 1] if kind == 3 else []) for kind in range(7)), [])
    + get(5),
    # 8 KiB translation entries around a hole in the neighbouring page
    "entry-size": header(entry=6)
    + pages_op(UNMAP, 13)
    + get(12)
    + get(14, 2)
    + pages_op(MAP_FRESH, 13)
    + get(12, 2),
    # max_registered_bytes of 4 pages
    "byte-limit": header(byte_limit_pages=4)
    + get(0, 4)
    + get(8, 4)
    + get(16, 8)
    + get(20, 2, hold=True)
    + get(24, 4),
}


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes(data))


if __name__ == "__main__":
    main()
