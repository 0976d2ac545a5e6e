#!/usr/bin/env python3
"""mrpmd as a DPDK primary + secondary (testpmd's way), default EAL mode.

  mrpmd_multiproc_test.py MRPMD CASE      (CASE: secondary | negative-control)

A primary mrpmd owns two net_null ports with 2 RX/TX queues each and forwards
queue 0 (--num-procs=2 --proc-id=0); a secondary (--proc-type=secondary, no
--vdev: the EAL gets the ports from the primary) forwards queue 1 with
--churn: it frees and reallocates the hugepage buffers it DMAs through, which
in a secondary the primary does on its behalf (EAL IPC). Pass: both forward,
0 corrupted payloads in both, and the secondary's frees reached the
primary's cache (its EAL FREE events > 0); bad --proc-id / --rxq are named
and refused. negative-control: the secondary
without generation checks corrupts payloads. Hugepage files live on a
private hugetlbfs mount and are removed with the runtime directory. Root only
(exit 77 = skipped otherwise).
"""
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mrpmd"))
from mrpmd_lines import fail, final_line  # noqa: E402

MRPMD, CASE = sys.argv[1], sys.argv[2]
PREFIX = "mrpmd-test-mp-%d" % os.getpid()


T0 = time.monotonic()


def step(what):
    """A timestamped progress line, flushed: a run that stalls says where."""
    print("[%6.1f s] %s" % (time.monotonic() - T0, what), flush=True)


def free_events(out):
    m = re.findall(r"EAL memory events: (\d+) alloc, (\d+) free", out)
    return int(m[-1][1]) if m else -1


def main(huge):
    eal = ["--no-pci", "--file-prefix", PREFIX, "--huge-dir", huge,
           "--log-level", "lib.eal:warning"]
    # Lcore IDs must differ between the processes: a mempool's per-lcore
    # caches live in the shared memory, indexed by lcore ID, and two threads
    # on one cache hand out the same mbuf twice. Same 2 CPUs, other IDs.
    lcores_primary, lcores_secondary = ["-l", "0-1"], ["--lcores", "2@0,3@1"]
    app = ["--rxq=2", "--txq=2", "--num-procs=2", "--hca=uring"]
    secondary = [MRPMD] + lcores_secondary + eal + ["--proc-type=secondary", "--"] + app
    primary = subprocess.Popen([MRPMD] + lcores_primary + eal +
                               ["--vdev", "net_null0", "--vdev", "net_null1", "--", "--proc-id=0"] +
                               app,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_p = ""
    try:
        # The ports are started once mrpmd prints its banner (and SIGINT is caught then).
        # select(), not a bare readline(): a primary that stops printing
        # must end the test with what it said, not hang it.
        deadline = time.monotonic() + 60
        started = False
        fd = primary.stdout.fileno()  # raw reads: the file object buffers nothing
        while not started and time.monotonic() < deadline:
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            out_p += chunk
            started = re.search(r"^mrpmd: .*port\(s\)", out_p, re.M) is not None
        if not started:
            fail("the primary did not start within 60 s (exit %s):\n%s"
                 % (primary.poll(), out_p))
        if primary.poll() is not None:
            fail("the primary exited %s:\n%s" % (primary.returncode, out_p + primary.stdout.read()))
        step("primary up")
        if CASE == "secondary":  # bad input first: named, refused, the primary untouched
            for args, code, want in ((["--proc-id=2"], 2, "--proc-id=2"),
                                     (["--proc-id=1", "--rxq=4", "--txq=4"], 1, "--rxq=4")):
                step("bad input: %s" % " ".join(args))
                bad = subprocess.run(secondary + args, capture_output=True, text=True,
                                     timeout=120)
                if bad.returncode != code or want not in bad.stdout + bad.stderr:
                    fail("%s: expected exit %d naming %r, got %d:\n%s"
                         % (args, code, want, bad.returncode, (bad.stdout + bad.stderr)[-1500:]))
        extra = ["--no-generation-check"] if CASE == "negative-control" else []
        step("secondary with --churn" + (" (no generation check)" if extra else ""))
        sec = subprocess.run(secondary + ["--proc-id=1", "--churn", "--seconds=3"] + extra,
                             capture_output=True, text=True, timeout=120)
        out_s = sec.stdout + sec.stderr
    finally:
        step("stopping the primary")
        primary.send_signal(signal.SIGINT)
        try:
            rest, _ = primary.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            primary.kill()
            rest, _ = primary.communicate()
            rest += "\n(the primary ignored SIGINT for 60 s and was killed)"
        out_p += rest
    fs, fp = final_line(out_s), final_line(out_p)
    if "secondary process, queues 1/2" not in out_s:
        fail("the secondary did not run as one:\n" + out_s[-2000:])
    if primary.returncode != 0 or fp["corrupted"] != 0 or fp["rx"] <= 0:
        fail("primary: exit %d, %s\n%s" % (primary.returncode, fp, out_p[-2000:]))
    if CASE == "negative-control":
        if fs["corrupted"] <= 0 or sec.returncode != 1:
            fail("negative control: a secondary without generation checks should corrupt "
                 "payloads under churn (exit 1): exit %d, %s" % (sec.returncode, fs))
        print("ok: the naive secondary corrupted %d of %d payloads" % (fs["corrupted"],
                                                                        fs["payloads"]))
        return
    if sec.returncode != 0 or fs["corrupted"] != 0 or fs["rx"] <= 0 or fs["resyncs"] <= 0:
        fail("secondary: exit %d, %s\n%s" % (sec.returncode, fs, out_s[-2000:]))
    frees = free_events(out_p)
    if frees <= 0:
        fail("the secondary's frees did not reach the primary's cache:\n" + out_p[-2000:])
    print("ok: primary %.3f Mpps, secondary %.3f Mpps with churn; 0 corrupted in both; "
          "%d FREE events from the secondary's churn reached the primary (%d resyncs there)"
          % (fp["mpps"], fs["mpps"], frees, fp["resyncs"]))


if os.geteuid() != 0:
    print("skipped: mounting hugetlbfs needs root")
    sys.exit(77)
huge = tempfile.mkdtemp(prefix="mrpmd-huge-")
try:
    subprocess.run(["mount", "-t", "hugetlbfs", "-o", "pagesize=2M", "nodev", huge], check=True)
    try:
        main(huge)
    finally:
        for name in os.listdir(huge):  # the EAL's hugepage files: they hold hugepages
            os.unlink(os.path.join(huge, name))
        subprocess.run(["umount", huge])
        shutil.rmtree("/var/run/dpdk/" + PREFIX, ignore_errors=True)
finally:
    os.rmdir(huge)
