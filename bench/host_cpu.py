"""CPU seconds a cold `launcher up` spends on one host, step by step (no SSH, no testbed).

    python3 bench/host_cpu.py [--repeat 5] [--python /usr/bin/python3]

On the testbed all hosts share the machine's cores, so what a cold `up` costs per host in
CPU decides its wall time there. This runs `apply.up` for a one-host deployment with the
local transport (so every host-side call is a real `python3 -I -S -c BOOTSTRAP ...` child)
and reports per call the CPU of that call's processes (this process's RUSAGE_CHILDREN delta:
the call and everything it waited for, e.g. supervisord's daemonizing parent), plus, after
`up`, the CPU of the daemons it left (supervisord and the agent, from /proc). The ranks are
`sleep`, so nothing of a workload is counted. Wall time per call is printed too. Timings
are medians over --repeat fresh deployments (`down --purge` between them).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPOLOGY = """\
version: 1
name: cpu
defaults:
  deploy_dir: {root}
  agent_port: {port}
  preflight: false
hosts:
  - name: h1
    address: 127.0.0.1
    transport: local
    devices: {{0: 10.213.250.1, 1: 10.213.250.2}}
instances:
  - name: demo
    hosts: [h1]
    devices: [0, 1]
    processes: per_device
    command: [sleep, "600"]
"""


def _clk() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def proc_cpu(pid: int) -> float:
    """utime + stime of a live process (its own, not its children's)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _clk()


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Metered:
    """A transport that records the CPU and wall time of each command (one host: calls never overlap)."""

    def __init__(self, inner, record: list[tuple[str, float, float]]):
        self.inner, self.record = inner, record
        self.host = inner.host

    def run(self, argv, stdin=None, timeout=None):
        label = argv[7] if len(argv) > 7 and argv[0] == "python3" else " ".join(argv[:2])
        c0, t0 = children_cpu(), time.monotonic()
        res = self.inner.run(argv, stdin=stdin, **({"timeout": timeout} if timeout else {}))
        self.record.append((label, children_cpu() - c0, time.monotonic() - t0))
        return res

    def close(self) -> None:
        self.inner.close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run() -> dict[str, tuple[float, float]]:
    from launcher.host.supervisor_rpc import supervisord_alive
    from launcher.deploy.apply import down, up
    from launcher.deploy.session import Session
    from launcher.core.pipeline import compile_text, rendered

    deploy = tempfile.mkdtemp(prefix="lt-cpu-", dir="/tmp")
    result = compile_text(TOPOLOGY.format(root=deploy, port=free_port()), "cpu.yaml")
    gen, files = rendered(result.plan)
    record: list[tuple[str, float, float]] = []
    session = Session(result.plan, progress=lambda _msg: None)
    for c in session.clients.values():
        c.transport = Metered(c.transport, record)
    root = next(iter(session.clients.values())).root
    out: dict[str, tuple[float, float]] = {}
    try:
        t0 = time.monotonic()
        up(session, files, gen)
        out["up (wall)"] = (0.0, time.monotonic() - t0)
        # the agent writes its pid once it is up; give it a moment to finish importing
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(os.path.join(root, "state", "agent.pid")):
            time.sleep(0.02)
        time.sleep(0.5)
        for label, cpu, wall in record:
            prev = out.get(label, (0.0, 0.0))
            out[label] = (prev[0] + cpu, prev[1] + wall)
        sup = int(Path(root, "run", "supervisord.pid").read_text())
        agent = int(Path(root, "state", "agent.pid").read_text())
        out["supervisord (daemon)"] = (proc_cpu(sup), 0.0)
        out["agent"] = (proc_cpu(agent), 0.0)
        out["total host CPU"] = (sum(v[0] for k, v in out.items()), 0.0)
        assert supervisord_alive(root)
    finally:
        session.progress = lambda _msg: None
        down(session, purge=True)
        session.close()
        shutil.rmtree(deploy, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the hosts' python3 (put first on PATH; the testbed hosts run /usr/bin/python3)")
    args = ap.parse_args()
    os.environ["PATH"] = f"{os.path.dirname(args.python)}:{os.environ['PATH']}"
    runs = [one_run() for _ in range(args.repeat)]
    print(f"load average {os.getloadavg()[0]:.2f}; medians of {args.repeat} cold ups of one local host")
    print(f"{'step':32} {'CPU s':>8} {'wall s':>8}")
    for key in runs[0]:
        cpu = statistics.median(r.get(key, (0.0, 0.0))[0] for r in runs)
        wall = statistics.median(r.get(key, (0.0, 0.0))[1] for r in runs)
        print(f"{key:32} {cpu:8.3f} {wall:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
