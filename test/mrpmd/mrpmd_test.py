#!/usr/bin/env python3
"""mrpmd end to end on net_null/net_ring vdevs, EAL --in-memory, real hugepages.

  mrpmd_test.py MRPMD CASE
    (CASE: churn | prompt | negative-control | sigint | bad-args | txpkts)

Each case runs the real binary and checks what it prints; exit 0 = pass.
"""
import re
import signal
import subprocess
import sys
import time

from mrpmd_lines import fail, final_line

MRPMD, CASE = sys.argv[1], sys.argv[2]
EAL = ["-l", "0-1", "--no-pci", "--in-memory", "--vdev", "net_null0", "--vdev", "net_ring0",
       "--log-level", "lib.eal:warning", "--file-prefix", "mrpmd-test-" + CASE]


def catches_sigint(pid):
    """Whether the process has a handler for SIGINT (SigCgt of /proc/PID/status)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)) != 0
    except OSError:
        pass
    return False


def run(app_args, stdin=None, timeout=90):
    p = subprocess.run([MRPMD] + EAL + ["--"] + app_args, input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def expect_clean_churn(f, out):
    if f["corrupted"] != 0:
        fail("corrupted packets with the generation check on: %d" % f["corrupted"])
    if f["rx"] <= 0 or f["lookups"] <= 0 or f["payloads"] <= 0:
        fail("nothing was forwarded/looked up/moved: " + str(f))
    if f["resyncs"] <= 0 or f["pages_repinned"] <= 0:
        fail("churn caused no resync: " + str(f))
    if f["refused"] != 0:
        fail("the HCA refused DMA: %d" % f["refused"])


if CASE == "churn":
    rc, out = run(["--forward-mode=io", "--hca=uring", "--churn", "--seconds=3"])
    if rc != 0:
        fail("exit %d:\n%s" % (rc, out[-3000:]))
    f = final_line(out)
    expect_clean_churn(f, out)
    print("ok:", {k: f[k] for k in ("mpps", "lookups", "resyncs", "pages_repinned", "corrupted")})

elif CASE == "negative-control":
    rc, out = run(["--forward-mode=io", "--hca=uring", "--churn", "--seconds=3",
                   "--no-generation-check"])
    f = final_line(out)
    if f["corrupted"] <= 0:
        fail("negative control: a naive cache under churn should corrupt packets: " + str(f))
    if rc != 1 or "corrupted packet(s)" not in out:
        fail("corrupted > 0 must exit 1 and say so, got exit %d:\n%s" % (rc, out[-1500:]))
    print("ok: naive cache corrupted %d of %d payloads" % (f["corrupted"], f["payloads"]))

elif CASE == "prompt":
    # testpmd's commands: `set fwd` is refused while forwarding; `clear port
    # stats all` zeroes what `show port stats all` then prints.
    script = ("help\nstart\nshow port stats all\nshow fwd stats all\nshow mrsync stats\n"
              "set fwd macswap\nstop\nclear port stats all\nshow port stats all\n"
              "set fwd macswap\nset fwd bogus\nstart\nshow fwd stats all\nstop\nquit\n")
    # paced, so `start` has forwarded something before the `show` commands
    p = subprocess.Popen([MRPMD] + EAL + ["--", "-i", "--hca=uring", "--churn"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    for line in script.splitlines(True):
        p.stdin.write(line)
        p.stdin.flush()
        time.sleep(1.0 if line.startswith("start") else 0.2)
    p.stdin.close()
    out = p.stdout.read()
    p.wait(timeout=60)
    if p.returncode != 0:
        fail("exit %d:\n%s" % (p.returncode, out[-3000:]))
    for want in ("show port stats all", "NIC statistics for port 0", "lcore hit rate",
                 "Forward statistics for port 0", "Accumulated forward statistics",
                 "Please stop forwarding first", "NIC statistics for port 0 cleared",
                 "set fwd macswap", "Bad arguments", "quit"):
        if want not in out:
            fail("prompt output lacks %r:\n%s" % (want, out[-3000:]))
    # refused while forwarding: the first run's final line still says io
    runs = [l for l in out.splitlines() if l.startswith("mrpmd: mode=")]
    if len(runs) != 2 or "mode=io " not in runs[0]:
        fail("set fwd while forwarding changed the engine: %s" % runs)
    # after the clear, with nothing forwarding, port 0 shows no packet
    after = out.split("NIC statistics for port 0 cleared", 1)[1]
    rx = re.search(r"RX-packets: (\d+)", after)
    if not rx or int(rx.group(1)) != 0:
        fail("clear port stats all left port 0 at %s:\n%s"
             % (rx and rx.group(1), after[:1500]))
    fwd = re.findall(r"Accumulated forward statistics.*\n\s*RX-packets: (\d+)", out)
    if not fwd or int(fwd[-1]) <= 0:
        fail("show fwd stats all counted nothing forwarded: %s" % fwd)
    f = final_line(out)
    if f["mode"] != "macswap":
        fail("set fwd macswap did not take: " + str(f))
    expect_clean_churn(f, out)
    print("ok: prompt drove start/show/clear/set fwd/stop/quit;", f["lookups"], "lookups")

elif CASE == "sigint":
    p = subprocess.Popen([MRPMD] + EAL + ["--", "--hca=none"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    # SIGINT before mrpmd installs its handler (EAL init takes seconds on a
    # loaded machine) would just kill it: wait until /proc says it catches it.
    deadline = time.monotonic() + 60
    while not catches_sigint(p.pid) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    if p.returncode != 0:
        fail("SIGINT exit %d:\n%s" % (p.returncode, out[-2000:]))
    f = final_line(out)
    if f["rx"] <= 0:
        fail("nothing forwarded before SIGINT: " + str(f))
    print("ok: SIGINT printed the final stats,", f["mpps"], "Mpps")

elif CASE == "bad-args":
    for args, code, want in ((["--forward-mode=bogus"], 2, "--forward-mode=bogus"),
                             (["--burst=0"], 2, "--burst=0"),
                             (["--hca=bogus"], 2, "--hca=bogus"),
                             # no ConnectX here: the mlx5 driver says why not
                             (["--hca=mlx5"], 1, "--hca=mlx5: "),
                             (["--txpkts=30"], 2, "--txpkts=30"),
                             (["--stats-period", "--nb-cores=1"], 2,
                              "--stats-period needs a value"),
                             (["--nb-cores=3"], 1, "--nb-cores=3"),
                             (["--frobnicate"], 2, "'--frobnicate'")):
        rc, out = run(args, timeout=60)
        if rc != code or want not in out:
            fail("%s: expected exit %d and a message naming %r, got %d:\n%s"
                 % (args, code, want, rc, out[-1500:]))
    print("ok: bad arguments are named and refused")

elif CASE == "txpkts":
    # testpmd's --txpkts (segment lengths; mrpmd sends their sum) in both spellings
    for spelling in (["--txpkts=64,36"], ["--txpkts", "100"]):
        rc, out = run(["--forward-mode=txonly", "--hca=none", "--seconds=1"] + spelling)
        if rc != 0:
            fail("%s: exit %d:\n%s" % (spelling, rc, out[-2000:]))
        f = final_line(out)
        if f["mode"] != "txonly" or f["tx"] <= 0:
            fail("%s: txonly sent nothing: %s" % (spelling, f))
    print("ok: --txpkts")

else:
    fail("unknown case " + CASE)
