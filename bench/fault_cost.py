"""What a page fault costs a process on this machine, by how much of its memory is in use.

    python3 bench/fault_cost.py [--hold 0,8,16] [--procs 32] [--repeat 3]

For each figure in --hold (GiB), one idle process touches that much memory and holds it; then
--procs Python processes start at once, each importing the demo rank (what a testbed rank does
before its barrier), and sleep. Their minor faults and kernel time are read from /proc while
they still live. No launcher, no testbed, no network: only how this machine's kernel (and
hypervisor) serves fresh pages while the rest of its memory is held. A testbed's hosts all share
this one machine's memory, so a 200-host testbed runs its processes at a fill a 16-host one never
reaches; bench/README.md uses this to tell the machine's growth from the launcher's.
Prints one row per figure and the ratio of kernel time per fault to the first figure's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from up_bench import Ballast, memory_in_use  # noqa: E402  (one way to hold memory, shared with up_bench)

HZ = os.sysconf("SC_CLK_TCK")
CHILD = "import launcher.host.demo_rank, time; time.sleep(60)"


def faults_and_cpu(pid: int) -> tuple[int, float, float]:
    """(minor faults, user s, sys s) of a live process."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return int(f[7]), int(f[11]) / HZ, int(f[12]) / HZ


def start_at_once(n: int) -> list[tuple[int, float, float]]:
    """Start n children at once; once they all sleep, their (faults, user, sys)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env=env) for _ in range(n)]
    try:
        time.sleep(1.0)
        while True:  # until every child sleeps (state S) with its imports done
            states = []
            for p in procs:
                with open(f"/proc/{p.pid}/stat") as fh:
                    states.append(fh.read().rsplit(")", 1)[1].split()[0])
            if all(s == "S" for s in states):
                break
            time.sleep(0.5)
        time.sleep(1.0)
        return [faults_and_cpu(p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hold", default="0,8,16", help="GiB held while the processes start (comma-separated)")
    ap.add_argument("--procs", type=int, default=32, help="processes started at once per round")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per figure (the median is printed)")
    args = ap.parse_args()
    holds = [float(x) for x in args.hold.split(",")]
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    print(f"{args.procs} processes at once (each imports launcher.host.demo_rank), median of {args.repeat} "
          f"rounds; machine memory {total:.1f} GiB, {os.cpu_count()} CPUs")
    print(f"{'held GiB':>8}  {'in use GiB':>10}  {'faults/proc':>11}  {'user ms':>7}  {'sys ms':>6}  "
          f"{'sys us/fault':>12}  {'vs first':>8}")
    first = None
    for gib in holds:
        ballast = Ballast(gib) if gib else None
        try:
            in_use = memory_in_use() / (1 << 30)
            rounds = []
            for _ in range(args.repeat):
                rows = start_at_once(args.procs)
                faults = sum(r[0] for r in rows)
                rounds.append((faults / len(rows), sum(r[1] for r in rows) / len(rows),
                               sum(r[2] for r in rows) / len(rows), sum(r[2] for r in rows) / faults * 1e6))
        finally:
            if ballast is not None:
                ballast.close()
        fpp, user, sys_s, per_fault = (statistics.median(col) for col in zip(*rounds))
        first = first or per_fault
        print(f"{gib:8g}  {in_use:10.1f}  {fpp:11.0f}  {user * 1000:7.1f}  {sys_s * 1000:6.1f}  "
              f"{per_fault:12.2f}  {per_fault / first:7.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
