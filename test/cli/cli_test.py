#!/usr/bin/env python3
"""Every tool parses its options alike (apps/common/cli.hpp, getopt_long):

  cli_test.py TOOL PATH

  - `--help` prints the usage to stdout and exits 0;
  - `--opt=value` and `--opt value` are both taken (followed by --help, so
    nothing runs: a refused value would exit 2 before the help);
  - a bad value exits 2 with a message naming the option and the value;
  - a value-taking option followed by another option is "needs a value"
    (it no longer swallows the next option);
  - an unknown option exits 2 naming it.
"""
import subprocess
import sys

TOOL, PATH = sys.argv[1], sys.argv[2]

# tool: (arguments before the tool's own, an option with a good and a bad value)
EAL = ["-l", "0", "--no-pci", "--in-memory", "--log-level", "lib.eal:error",
       "--file-prefix", "cli-test", "--"]
TOOLS = {
    "mrsync-bench": ([], "--batches", "3", "x3"),
    "mrsync-demo": ([], "--ops", "1e3", "many"),
    "mrsync-torture": ([], "--ring-entries", "2", "-1"),
    "mrsync_stale": ([], "--iterations", "5", "0"),
    "verbs_torture": ([], "--source", "uffd", "bogus"),
    "mrpmd": (EAL, "--stats-period", "2", "3601"),
}
pre, opt, good, bad = TOOLS[TOOL]


def fail(why):
    print("FAIL:", TOOL, why)
    sys.exit(1)


def run(args):
    p = subprocess.run([PATH] + pre + args, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


rc, out, err = run(["--help"])
if rc != 0 or "usage:" not in out or opt not in out:
    fail("--help: exit %d, stdout %r, stderr %r" % (rc, out[-500:], err[-500:]))
if "usage:" in err:
    fail("--help printed the usage on stderr")

for args in ([opt + "=" + good, "--help"], [opt, good, "--help"]):
    rc, out, err = run(args)
    if rc != 0 or "usage:" not in out:
        fail("%s: exit %d (expected the value taken, then the help):\n%s" % (args, rc, err))

rc, out, err = run([opt + "=" + bad])
if rc != 2 or opt + "=" + bad not in err or "expected" not in err:
    fail("%s=%s: exit %d, expected 2 and a message naming it:\n%s" % (opt, bad, rc, err))
rc, out, err = run([opt, bad])
if rc != 2 or opt + "=" + bad not in err:
    fail("%s %s: exit %d, expected 2 and a message naming it:\n%s" % (opt, bad, rc, err))

rc, out, err = run([opt, "--help"])
if rc != 2 or opt + " needs a value" not in err:
    fail("%s followed by an option: exit %d, expected 2 and 'needs a value':\n%s"
         % (opt, rc, err))

rc, out, err = run(["--frobnicate"])
if rc != 2 or "'--frobnicate'" not in err:
    fail("--frobnicate: exit %d, expected 2 naming it:\n%s" % (rc, err))

print("ok:", TOOL, "--help, both spellings of", opt, "and bad values")
