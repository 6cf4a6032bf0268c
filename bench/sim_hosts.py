"""The operator side at 1,000 to 10,000 hosts, by simulation: what `launcher up`, `status` and
`down` cost the machine that runs them, per host.

The testbed stops at a few hundred hosts (each is a network namespace with sshd, supervisord,
an agent and ranks on this one machine). Here the hosts are simulated and the operator side is
real: the launcher's CLI runs unchanged, as a user runs it (`python -m launcher up FILE`),
with its OpenSSH transport, its fan-out and its whole plan, render and upload; only the `ssh`
it finds on PATH is bench/sim/ssh.c, which hands each command to one server process (this
script with --serve) that answers for every simulated host what the host side answers (the
shell fast path of `state`, the lock, `prepare --switch`, `gang-start`, `down`), from the
files `launcher render` made for that host. Per call the operator pays what it pays with real
hosts over ssh's shared connections minus the ssh client itself: a fork and exec of a small
client, the command, the upload (the runtime and the generation, gzip and tar, as to a real
host), the reply and its parsing.

Measured per command and size, for the CLI process and everything it started and reaped (the
ssh stand-ins): wall time, CPU seconds (user + sys), CPU ms per host, peak RSS, and the
peaks of its threads and open file descriptors (sampled every 50 ms from /proc), and the calls
per host. Not measured: ssh's own CPU (key exchange on a first connection, encryption) and
its shared connections (one `ssh` master process per host while ControlPersist keeps it: see
bench/README.md for what those cost at 10,000 hosts). The last line is machine-readable:
`hosts=N up_cpu_ms_per_host=... status_cpu_ms_per_host=... down_cpu_ms_per_host=...
up_rss_mb=... flat_ratio=R` (R: the worst of the three commands' CPU per host at the largest
size over the smallest).

    python bench/sim_hosts.py [--hosts 1000,5000,10000] [--forks 32]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from as_installed import byte_compile  # bench/ is this script's sys.path[0]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = "/srv/launcher-sim"
NAME = "sim"
UPTIME, HZ, START = 16479.05, 100, 1_000_000  # the simulated hosts' /proc: uptime, CLK_TCK, a process start


# --- the simulated hosts (--serve) -----------------------------------------------------------
class Hosts:
    """Every simulated host's deployment, in memory; manifests and gangs from `launcher render`'s files."""

    def __init__(self, rendered: Path):
        self.rendered = rendered
        self.hosts: dict[str, dict[str, Any]] = {}
        self.pid = 100_000
        self.calls: dict[str, int] = {}

    def host(self, root: str) -> dict[str, Any]:
        name = os.path.basename(root)
        h = self.hosts.get(name)
        if h is None:
            h = self.hosts[name] = {"name": name, "root": root, "generation": None, "running": {}}
        return h

    def doc(self, host: str, file: str) -> Any:
        return json.loads((self.rendered / host / file).read_bytes())

    def answer(self, cmd: str, stdin: bytes) -> tuple[int, bytes, bytes]:
        argv = shlex.split(cmd)
        if argv[:1] == ["__stats__"]:
            calls, self.calls = self.calls, {}
            return 0, json.dumps(calls).encode(), b""
        if argv[:1] == ["python3"] and len(argv) >= 7 and "lock.json" in argv[4]:  # lock.LOCK_SCRIPT ROOT OP ...
            op = argv[6]
            self.calls[f"lock-{op}"] = self.calls.get(f"lock-{op}", 0) + 1
            # acquire also says whether the lock host has nothing of the deployment (`up` then has no state round)
            blank = self.host(argv[5])["generation"] is None
            reply = {"acquire": {"acquired": 1, "blank": blank}, "renew": {"renewed": True}}.get(op, {})
            return 0, (json.dumps(reply) + "\n").encode(), b""
        if argv[:1] == ["python3"] and len(argv) >= 8:  # the bootstrap: python3 -I -S -c BOOTSTRAP ROOT RID ACTION ...
            root, action = argv[5], argv[7]
            args = [a for a in argv[8:] if not a.startswith("--fence=")]  # the command's fencing token
            self.calls[action] = self.calls.get(action, 0) + 1
            return 0, (json.dumps(self.action(self.host(root), action, args)) + "\n").encode(), b""
        if argv[:2] == ["sh", "-c"] and len(argv) >= 5:
            script, root = argv[2], argv[4]
            kind = "state" if "blank=1" in script else "lock" if "lock.new" in script else \
                "unlock" if "lock.gone" in script else "renew" if "exit 4" in script else "sh"
            self.calls[kind] = self.calls.get(kind, 0) + 1
            if kind == "state":
                return 0, self.fast_state(self.host(root)).encode(), b""
            if kind == "lock":
                return 0, f"acquired\n{int(time.time())}\n".encode(), b""
            if kind in ("unlock", "renew"):  # lock.RENEW_CMD prints nothing when it renewed
                return 0, b"", b""
        print(f"sim: not simulated: {cmd[:300]}", file=sys.stderr)
        return 127, b"", f"sim: not simulated: {cmd[:100]}\n".encode()

    def action(self, h: dict[str, Any], action: str, args: list[str]) -> dict[str, Any]:
        if action == "prepare":
            if "--if-blank" in args and h["generation"] is not None:
                return {"generation": args[0], "not_blank": True}
            previous, h["generation"] = h["generation"], args[0]
            h["manifest"] = self.doc(h["name"], "manifest.json")
            switched: dict[str, Any] = {"previous": previous, "generation": args[0], "added": [], "changed": [],
                                        "removed": [], "started_supervisord": True, "stopped_orphans": []}
            start = [g for a in args if a.startswith("--start=") for g in a[len("--start="):].split(",") if g]
            if start:
                switched["started"] = {"started_at": time.time(), "groups": start}
                for g in start:
                    self.run(h, g)
            return {"generation": args[0], "uploaded": True, "switched": switched}
        if action == "gang-start":
            gangs = self.doc(h["name"], "gang.json")["gangs"]
            started: dict[str, dict[str, float]] = {}
            for g in args:
                for m in gangs[g]["members"]:
                    self.run(self.host(os.path.join(os.path.dirname(h["root"]), m["host"])), g)
                    started.setdefault(g, {})[m["host"]] = time.time()
            return {"started": started}
        if action == "down":
            h.update(generation=None, running={}, manifest=None)
            return {"stopped_supervisord": True, "purged": "--purge" in args, "stopped_orphans": []}
        return {"error": f"sim: action {action} is not simulated"}

    def run(self, h: dict[str, Any], owner: str) -> None:
        for p in (h.get("manifest") or {}).get("programs", []):
            if p["owner"] == owner:
                self.pid += 1
                h["running"][p["name"]] = self.pid

    def fast_state(self, h: dict[str, Any]) -> str:
        """What remote.HostClient.FAST_STATE prints: blank, or the agent's snapshot and /proc's lines."""
        if h["generation"] is None:
            return 'runtime-missing\n{"blank": true}\n'
        manifest = h["manifest"]
        agent = h.setdefault("agent", 99_999)
        programs = [{"name": p["name"], "group": p["owner"], "exitstatus": 0, "spawnerr": None,
                     **({"state": "RUNNING", "pid": h["running"][p["name"]], "uptime": 1.0, "start": int(time.time()),
                         "starttime": START} if p["name"] in h["running"] else
                        {"state": "STOPPED", "pid": 0, "uptime": 0, "start": 0, "starttime": None})}
                    for p in manifest["programs"]]
        programs.append({"name": "launcher-agent", "group": "launcher-agent", "state": "RUNNING", "pid": agent,
                         "uptime": 3.0, "exitstatus": 0, "spawnerr": None, "start": int(time.time()),
                         "starttime": START})
        owners = {p["owner"]: p["owner_hash"] for p in manifest["programs"] if p["name"] in h["running"]}
        snap = {"root": h["root"], "secret_id": "5133d0c5e1a7", "generation": h["generation"], "supervisord": True,
                "manifest": manifest, "programs": programs, "gang": {},
                "started": {o: {"generation": h["generation"], "owner_hash": oh} for o, oh in owners.items()},
                "waiting": {}, "orphans": [], "time": time.time()}
        stat = f"(python3) S 1 {{0}} 1 0 -1 4194304 2640 30 0 0 10 2 0 0 20 0 3 0 {START} 248864768 4355"
        lines = [f"{pid} {pid} {stat.format(pid)}" for pid in [agent, *h["running"].values()]]
        return json.dumps(snap) + f"\n#proc\nuptime {UPTIME}\nhz {HZ}\n" + "\n".join(lines) + "\n"


async def _serve(sock: str, rendered: Path) -> None:
    hosts = Hosts(rendered)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            n = struct.unpack("I", await reader.readexactly(4))[0]
            cmd = (await reader.readexactly(n)).decode()
            n = struct.unpack("I", await reader.readexactly(4))[0]
            await reader.readexactly(n)  # the address: the root in the command names the host
            n = struct.unpack("Q", await reader.readexactly(8))[0]
            stdin = await reader.readexactly(n)
            code, out, err = hosts.answer(cmd, stdin)
            writer.write(struct.pack("iI", code, len(out)) + out + struct.pack("I", len(err)) + err)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_unix_server(client, sock, limit=1 << 24)
    async with server:
        await server.serve_forever()


# --- the operator side, measured ------------------------------------------------------------
def topology(n: int) -> str:
    out = [f"version: 1\nname: {NAME}\ndefaults:\n  deploy_dir: {DEPLOY_DIR}\n  preflight: false\n"
           "  ssh: {user: sim}\nhosts:"]
    for i in range(n):
        a, b, c = i // 62500, i // 250 % 250, i % 250 + 1
        out.append(f"  - {{name: s{i:05d}, address: 10.{a}.{b}.{c}, devices: {{0: 11.{a}.{b}.{c}, 1: 12.{a}.{b}.{c}}}}}")
    out.append("instances:")  # two hosts each, a rank per NPU: what the e2e tests and up_bench run
    out += [f"  - {{name: m{k:05d}, hosts: [s{2 * k:05d}, s{2 * k + 1:05d}], devices: [0, 1], processes: per_device, "
            f"command: [launcher-demo-rank, --health-port, '18610']}}" for k in range(n // 2)]
    return "\n".join(out) + "\n"


class Peaks(threading.Thread):
    """Samples a process's threads, open fds and RSS every 50 ms, keeping the peaks."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.threads, self.fds, self.children = pid, 0, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                self.threads = max(self.threads, int(status.split("Threads:")[1].split()[0]))
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
                kids = sum(len(Path(f"/proc/{self.pid}/task/{t}/children").read_text().split())
                           for t in os.listdir(f"/proc/{self.pid}/task"))  # each thread's own children
                self.children = max(self.children, kids)
            except (OSError, IndexError, ValueError):
                pass


def run_cli(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "launcher", *cmd], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = Peaks(proc.pid)
    peaks.start()
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else b""))
    reader.start()
    err = proc.stderr.read() if proc.stderr else b""
    reader.join()
    _, status, ru = os.wait4(proc.pid, 0)  # the CLI with every child it reaped (the ssh stand-ins)
    proc.returncode = os.waitstatus_to_exitcode(status)
    peaks.done.set()
    peaks.join()
    out = b"".join(out_chunks).decode("utf-8", "replace")
    if proc.returncode != 0:
        raise SystemExit(f"launcher {' '.join(cmd)} exited {proc.returncode}:\n{err.decode()[-3000:]}")
    return {"wall": time.monotonic() - t0, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
            "threads": peaks.threads, "fds": peaks.fds, "children": peaks.children, "stdout": out}


def stats(sock: str) -> dict[str, int]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        cmd = b"__stats__"
        s.sendall(struct.pack("I", len(cmd)) + cmd + struct.pack("I", 0) + struct.pack("Q", 0))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    n = struct.unpack("I", data[4:8])[0]
    return json.loads(data[8:8 + n])


def measure(n: int, work: Path, simbin: Path, forks: int) -> dict[str, dict[str, Any]]:
    topo = work / f"sim{n}.yaml"
    topo.write_text(topology(n))
    rendered = work / f"rendered{n}"
    subprocess.run([sys.executable, "-m", "launcher", "render", str(topo), "-o", str(rendered)], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    sock = str(work / "hosts.sock")
    server = subprocess.Popen([sys.executable, __file__, "--serve", sock, str(rendered)])
    try:
        while not os.path.exists(sock):
            if server.poll() is not None:
                raise SystemExit("the simulated hosts' server did not start")
            time.sleep(0.05)
        env = {**os.environ, "PATH": f"{simbin}:{os.environ['PATH']}", "SIM_SOCK": sock,
               "XDG_RUNTIME_DIR": str(work / "xdg")}
        out: dict[str, dict[str, Any]] = {}
        for name, cmd in (("up", ["up", str(topo)]), ("status", ["status", str(topo)]),
                          ("down", ["down", str(topo), "--purge"])):
            r = run_cli(cmd + ["--forks", str(forks)], env)
            r["calls"] = stats(sock)
            if name == "status":  # every rank of every host RUNNING, as the simulated hosts say
                running = sum(1 for line in r["stdout"].splitlines() if " RUNNING " in line)
                assert running == 2 * n, f"status shows {running} running ranks of {2 * n}"
            out[name] = r
            print(f"  {n:>6} hosts  {name:<6} {r['wall']:7.1f} s  CPU {r['cpu']:7.1f} s = {r['cpu'] / n * 1000:6.1f} ms "
                  f"a host  peak RSS {r['rss_mb']:6.0f} MiB ({r['rss_mb'] * 1024 / n:5.1f} KiB a host)  threads "
                  f"{r['threads']:3d}  fds {r['fds']:4d}  children {r['children']:3d}  calls a host "
                  f"{sum(r['calls'].values()) / n:.2f} {dict(sorted(r['calls'].items()))}  (load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
        return out
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(rendered, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1000,5000,10000", help="comma-separated sizes")
    ap.add_argument("--forks", type=int, default=32, help="the CLI's --forks (its default: 32)")
    ap.add_argument("--serve", nargs=2, metavar=("SOCK", "RENDERED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve[0], Path(args.serve[1])))
        return
    byte_compile(ROOT / "launcher")
    sizes = [int(s) for s in args.hosts.split(",")]
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # the renders: 6 files a host
    work = Path(tempfile.mkdtemp(prefix="sim-hosts-", dir=base))
    try:
        simbin = work / "bin"
        simbin.mkdir()
        subprocess.run(["cc", "-O2", "-o", str(simbin / "ssh"), str(ROOT / "bench/sim/ssh.c")], check=True)
        (work / "xdg").mkdir(mode=0o700)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        print(f"operator side, simulated hosts: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
              f"open files {soft}/{hard}, max user processes {resource.getrlimit(resource.RLIMIT_NPROC)[0]}, "
              f"--forks {args.forks}", flush=True)
        results = {n: measure(n, work, simbin, args.forks) for n in sizes}
        small, large = results[sizes[0]], results[sizes[-1]]
        per_host = {c: large[c]["cpu"] / sizes[-1] * 1000 for c in ("up", "status", "down")}
        flat = max((large[c]["cpu"] / sizes[-1]) / (small[c]["cpu"] / sizes[0]) for c in per_host)
        print(f"hosts={sizes[-1]} " + " ".join(f"{c}_cpu_ms_per_host={v:.1f}" for c, v in per_host.items())
              + f" up_rss_mb={large['up']['rss_mb']:.0f} flat_ratio={flat:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
