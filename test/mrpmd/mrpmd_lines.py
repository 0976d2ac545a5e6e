"""What mrpmd prints, parsed for the end-to-end tests (test/mrpmd, test/dpdk)."""
import re
import sys


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def final_line(out):
    """The last 'mrpmd: mode=...' line as a dict of numbers/strings."""
    lines = [l for l in out.splitlines() if l.startswith("mrpmd: mode=")]
    if not lines:
        fail("no final stats line in:\n" + out[-3000:])
    fields = dict(kv.split("=", 1) for kv in lines[-1].split()[1:])
    return {k: (float(v) if re.fullmatch(r"[0-9.]+", v) else v) for k, v in fields.items()}
