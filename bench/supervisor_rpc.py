"""What the host side's own XML-RPC client saves over supervisor's transport, measured.

    python3 bench/supervisor_rpc.py [--repeat 20] [--calls 500]

The host side talks to supervisord through launcher/host/supervisor_rpc.py, a small client
over the unix socket, instead of supervisor's own `supervisor.xmlrpc.SupervisorTransport`
under `xmlrpc.client.ServerProxy`. Every host-side call of `up`/`status`/`down` and every
agent start is a fresh `python3` process, so what counts is import plus first call. This starts
one real supervisord (unix socket only, one `sleep` program) and runs, interleaved, --repeat
fresh interpreters per column:

- floor: `python3 -c pass` (the interpreter's own start),
- ours: import the launcher's client and call `supervisor.getAllProcessInfo()` once,
- supervisor's: the same call through `ServerProxy` + `SupervisorTransport`,

printing the median CPU (user + system of the child) and wall time per column, then the
per-call cost in one process over --calls calls. Last line:
`ours_cpu_ms=A supervisor_cpu_ms=B floor_cpu_ms=F ratio=B/A ours_call_us=C supervisor_call_us=D`
(the ratio of whole processes: above the floor ours is a few ms, too small to divide by).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SUP = "supervisor's"  # the column of supervisor's own transport
# each client made as `s` (the fresh-process column makes it and calls once, the loop many times)
CLIENTS = {
    "ours": "from launcher.host.supervisor_rpc import Supervisor\ns = Supervisor({sock!r})",
    SUP: ("import xmlrpc.client\nfrom supervisor.xmlrpc import SupervisorTransport\n"
          "s = xmlrpc.client.ServerProxy('http://127.0.0.1', transport=SupervisorTransport(None, None, "
          "'unix://' + {sock!r}))"),
}
CALL = "s.supervisor.getAllProcessInfo()"
LOOP = ("import time\n{setup}\nt = time.perf_counter()\nfor _ in range({calls}):\n    {call}\n"
        "print((time.perf_counter() - t) / {calls} * 1e6)\n")

CONF = """\
[unix_http_server]
file={run}/supervisor.sock
chmod=0700

[supervisord]
logfile={run}/supervisord.log
pidfile={run}/supervisord.pid
nodaemon=true

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:idle]
command=sleep 600
"""


def child(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def wait_for_socket(sock: str, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if os.path.exists(sock):
            return
        if proc.poll() is not None:
            raise SystemExit(f"supervisord exited ({proc.returncode}) before it listened")
        time.sleep(0.05)
    raise SystemExit("supervisord did not create its socket within 10 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="rpc-bench-") as run:
        os.chmod(run, 0o700)
        conf = Path(run) / "supervisord.conf"
        conf.write_text(CONF.format(run=run))
        sock = f"{run}/supervisor.sock"
        daemon = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_socket(sock, daemon)
            setups = {name: code.format(sock=sock) for name, code in CLIENTS.items()}
            columns = {"floor": "pass\n", **{name: f"{setup}\n{CALL}\n" for name, setup in setups.items()}}
            for code in columns.values():  # warm the page cache and pycs
                child(code, env)
            samples: dict[str, list[tuple[float, float]]] = {k: [] for k in columns}
            for _ in range(args.repeat):  # interleaved: the machine's load falls on every column alike
                for name, code in columns.items():
                    samples[name].append(child(code, env))
            per_call = {}
            for name, setup in setups.items():
                out = subprocess.run([sys.executable, "-c", LOOP.format(setup=setup, calls=args.calls, call=CALL)],
                                     env=env, check=True, capture_output=True, text=True).stdout
                per_call[name] = float(out.strip())
        finally:
            daemon.terminate()
            daemon.wait(30)
    cpu = {k: statistics.median(c for c, _ in v) * 1000 for k, v in samples.items()}
    wall = {k: statistics.median(w for _, w in v) * 1000 for k, v in samples.items()}
    print(f"fresh interpreter + import + one getAllProcessInfo, median of {args.repeat} (ms):")
    print(f"{'column':<14}{'CPU':>8}{'wall':>8}{'CPU over floor':>16}")
    for k in columns:
        print(f"{k:<14}{cpu[k]:>8.1f}{wall[k]:>8.1f}{cpu[k] - cpu['floor']:>16.1f}")
    print(f"one call in a warm process (us), over {args.calls} calls: ours {per_call['ours']:.0f}, "
          f"supervisor's {per_call[SUP]:.0f}")
    print(f"ours_cpu_ms={cpu['ours']:.1f} supervisor_cpu_ms={cpu[SUP]:.1f} "
          f"floor_cpu_ms={cpu['floor']:.1f} "
          f"ratio={cpu[SUP] / cpu['ours']:.2f} "
          f"ours_call_us={per_call['ours']:.0f} supervisor_call_us={per_call[SUP]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
