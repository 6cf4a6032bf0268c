"""How long `up N` and `down` take here:  python -m tests.testbed.timing [N] [ROUNDS]

Also times one parallel `ssh hN true` round (curve25519 kex, as the ssh_config sets), since
that is the cost every launcher test pays per host. Prints medians over ROUNDS.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

from .core import Testbed


def _one_round(n: int) -> tuple[float, float, float]:
    t0 = time.monotonic()
    tb = Testbed.up(n)
    t1 = time.monotonic()
    try:
        procs = [subprocess.Popen(tb.ssh_argv(h, "true"), stdin=subprocess.DEVNULL) for h in tb.hosts]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("ssh to a testbed host failed")
        t2 = time.monotonic()
    finally:
        t3 = time.monotonic()
        tb.down()
        t4 = time.monotonic()
    return t1 - t0, t2 - t1, t4 - t3


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 16
    rounds = int(argv[1]) if len(argv) > 1 else 5
    results = [_one_round(n) for _ in range(rounds)]
    for label, values in zip(("up", "parallel ssh true", "down"), zip(*results)):
        print(f"{label:<18} n={n}: median {statistics.median(values):.3f} s  "
              f"(min {min(values):.3f}, max {max(values):.3f}, {rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
