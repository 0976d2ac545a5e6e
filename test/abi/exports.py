#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fails when a shared library exports a symbol outside its allow-list, misses
one it must export, or lacks its versioned SONAME.

    exports.py mrsync|mrsync_dpdk LIBRARY

The allow-lists are the public API (mrsync.h, verbs.h, mrsync_dpdk.h), the
plug-in API libmrsync_dpdk needs (driver/source registries, EventBuffer), the
software HCA's DMA API (uring.hpp) and what dynamic_cast needs; they mirror
lib/libmrsync.map and lib/dpdk/libmrsync_dpdk.map.
"""
import re
import subprocess
import sys

ALLOWED = {
    'mrsync': [
        r'mrsync_(?!dpdk_)\w+',
        r'mrsync::driver_of\(mrsync_ctx\*\)',
        r'mrsync::Registry<mrsync::(Driver|Source)Factory>::\w+\(.*\)(::registered)?',
        r'mrsync::log_(enabled|line)\(.*\)',
        r'mrsync::EventBuffer::(EventBuffer|append|announce|publish|drain|stats|enable_wakeup)\(.*\)( const)?',
        r'mrsync::BufferedEventSource::\w+\(.*\)( const)?',
        r'mrsync::uring::Hca::(create|available|write|read|burst|poll|wait|wait_one|wait_releases|'
        r'stats|name|caps|~Hca)\(.*\)( const)?',
        r'(typeinfo|typeinfo name|vtable) for mrsync::(Driver|EventSource|BufferedEventSource|uring::Hca)',
    ],
    'mrsync_dpdk': [
        r'mrsync_dpdk_(attach|detach|ctx|memory_is_static|register_mempool|lcore_cache|'
        r'lookup_slow|lcore_flush|last_error|get_stats)',
    ],
}
# Must be there: a sample of each group, so an empty or broken export list fails too.
REQUIRED = {
    'mrsync': ['mrsync_ctx_create', 'mrsync_get', 'mrsync_get_stats', 'mrsync_last_error',
               'mrsync::driver_of(mrsync_ctx*)'],
    'mrsync_dpdk': ['mrsync_dpdk_attach', 'mrsync_dpdk_lookup_slow', 'mrsync_dpdk_get_stats'],
}
# The calls of 0.1 kept for programs linked against it (lib/*/compat.cpp).
REQUIRED_OLD = {
    'mrsync': ['mrsync_get_stats@MRSYNC_0.1'],
    'mrsync_dpdk': ['mrsync_dpdk_get_stats@MRSYNC_DPDK_0.1'],
}
REQUIRED_IF = {'mrsync::uring::Hca::create(mrsync::uring::HcaOptions const&)': 'uring'}
SONAME = {'mrsync': 'libmrsync.so.0', 'mrsync_dpdk': 'libmrsync_dpdk.so.0'}


def main():
    name, path = sys.argv[1], sys.argv[2]
    out = subprocess.run(['nm', '-D', '--defined-only', '--demangle', path], check=True,
                         capture_output=True, text=True).stdout
    symbols = set()
    versioned = set()
    for line in out.splitlines():
        parts = line.split(' ', 2)
        if len(parts) < 3 or parts[1] == 'A':  # A: a version definition (MRSYNC_0.1)
            continue
        versioned.add(parts[2])
        symbols.add(re.sub(r'@+\S+$', '', parts[2]))
    allowed = [re.compile(p) for p in ALLOWED[name]]
    bad = sorted(s for s in symbols if not any(p.fullmatch(s) for p in allowed))
    missing = [s for s in REQUIRED[name] if s not in symbols]
    missing += [s for s in REQUIRED_OLD[name] if s not in versioned]
    if name == 'mrsync' and any('uring::Hca' in s for s in symbols):
        missing += [s for s in REQUIRED_IF if s not in symbols]
    dyn = subprocess.run(['readelf', '-d', path], check=True, capture_output=True,
                         text=True).stdout
    soname = re.search(r'\(SONAME\)\s+Library soname: \[(.*)\]', dyn)
    ok = True
    if bad:
        ok = False
        print(f'{path}: {len(bad)} exported symbol(s) outside the public API:')
        for s in bad:
            print('  ' + s)
    if missing:
        ok = False
        print(f'{path}: public symbol(s) not exported: ' + ', '.join(missing))
    if not soname or soname.group(1) != SONAME[name]:
        ok = False
        print(f'{path}: SONAME is {soname.group(1) if soname else None}, want {SONAME[name]}')
    print(f'{path}: {len(symbols)} exported symbols' + ('' if ok else ' (FAILED)'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
