#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Compiles every installed header alone: a file whose first and only line
includes it, with -Wall -Wextra -Werror, as C where it is C and as C++ at the
oldest standard it promises (mrsync.hpp: C++17).

    headers.py --cc CC... --cxx CXX... -I DIR... -- NAME:LANG[:dpdk]...

NAME is the include name (mrsync/mrsync.h), LANG c, c++17 or c++20; dpdk adds
`pkg-config --cflags libdpdk` (as system headers).
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile


def dpdk_flags():
    out = subprocess.run(['pkg-config', '--cflags', 'libdpdk'], check=True, capture_output=True,
                         text=True).stdout
    return ['-isystem' + f[2:] if f.startswith('-I') else f for f in shlex.split(out)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--cc', required=True)
    ap.add_argument('--cxx', required=True)
    ap.add_argument('-I', dest='incs', action='append', default=[])
    ap.add_argument('specs', nargs='+')
    a = ap.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in a.specs:
            name, lang, *extra = spec.split(':')
            c = lang == 'c'
            src = os.path.join(tmp, 'h.c' if c else 'h.cc')
            with open(src, 'w') as f:
                f.write(f'#include <{name}>\n')
            cmd = shlex.split(a.cc if c else a.cxx)
            # DPDK's own headers need POSIX types (ssize_t): gnu11 as DPDK builds with
            std = ('gnu11' if 'dpdk' in extra else 'c11') if c else lang
            cmd += ['-std=' + std, '-Wall', '-Wextra', '-Werror',
                    '-fsyntax-only', src] + ['-I' + i for i in a.incs]
            if 'dpdk' in extra:
                cmd += dpdk_flags()
            r = subprocess.run(cmd, capture_output=True, text=True)
            print(f'{"ok  " if r.returncode == 0 else "FAIL"} {name} as {lang}')
            if r.returncode:
                failed += 1
                print('  ' + shlex.join(cmd))
                print(r.stderr)
    print(f'{len(a.specs) - failed} of {len(a.specs)} header builds passed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
