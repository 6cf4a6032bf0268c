"""`launcher up` against a parallel OpenSSH floor and Ansible, on the network-namespace testbed.

Run as root (the testbed needs network namespaces):

    python3 bench/up_bench.py [--hosts 16] [--repeat 3] [--no-ansible] [--profile DIR]

It brings up N testbed hosts (always torn down again, also on failure and Ctrl-C), writes a
topology like tests/e2e/test_cluster.py's (one instance over all hosts, 2 NPUs per host, one
`launcher-demo-rank --health-port 18610` per NPU, user `lt`, deploy_dir /srv/launcher) and
measures, per repeat and side by side:

  launcher   `python -m launcher up` cold / up again with no change / status / down --purge, and a
             gang restart (kill -9 one rank, until every rank passed a new barrier); a subprocess,
             as a user runs it, so interpreter start-up and imports count.
  floor      plain OpenSSH, one `ssh` per host, all at once: the same runtime + generation tars on
             stdin, extracted, ranks started with nohup; status = one `ps` round; down = one kill round.
  ansible    ansible-playbook (forks 32) doing copy + unarchive + nohup start + wait_for, and down.

Every "up" ends when this process has seen every rank's /health answer with a barrier passed
after the up began. See bench/README.md for exactly what each column does and does not do.
The table goes to stdout; the last line is machine-readable. No timing is asserted.
"""
from __future__ import annotations

import argparse
import gzip
import http.client
import io
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # tests.testbed; `launcher` comes from the snapshot when there is one
from as_installed import byte_compile  # noqa: E402
# The launcher measured is a copy of the working tree's `launcher/` taken when the script starts
# (see snapshot_launcher): others may edit the checkout while a run takes minutes.
SNAPSHOT: Path | None = None

HEALTH = 18610
DEVICES = 2                      # NPUs per host, one rank each (processes: per_device)
DEPLOYMENT = "bench"
DEPLOY_DIR = "/srv/launcher"
ANSIBLE_VENV = "/tmp/up-bench-ansible-venv"
WAIT_TIMEOUT = 120.0
BASELINE = "de306cb"  # issue 11 point 6's "before": first gang restart after a 1 s backoff, 1 s supervisord wakes
POLL = 0.05
XDG_PREFIX = "/tmp/ubx-"  # the launcher's XDG_RUNTIME_DIR (its shared ssh connections' sockets)


def log(msg: str) -> None:
    print(f"[up_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_cpu() -> float:
    """CPU seconds this machine has spent busy (all processes: CLI, ssh, sshd, hosts' daemons, ranks)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal (not idle, iowait)
    return busy / os.sysconf("SC_CLK_TCK")


def testbed_netns(tb) -> set[int]:
    """The network namespaces of the testbed's hosts (inode numbers): where their processes run."""
    return {os.stat(f"/proc/{h.sshd_pid}/ns/net").st_ino for h in tb.hosts}


def process_table(netns: set[int]) -> dict[tuple[int, int], dict[str, Any]]:
    """(pid, start time) -> {kind, cpu (its own and of the children it reaped), own, cmd, start (s
    since boot)} for every process in one of the ``netns`` (the testbed's hosts: not other people's
    work on this machine), and the launcher's shared ssh connections (their masters outlive the
    CLI: not its children)."""
    hz, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
            if os.stat(f"/proc/{pid}/ns/net").st_ino not in netns:
                if not cmd.startswith(b"ssh") or XDG_PREFIX.encode() not in cmd:  # a master: "ssh: PATH [mux]"
                    continue
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
            comm = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode("utf-8", "replace")
            f = raw.rsplit(b")", 1)[1].split()
            if comm.startswith("python"):
                comm = ("demo rank" if b"demo_rank" in cmd else "agent" if b"launcher.host.agent" in cmd
                        else "python")
            out[(int(pid), int(f[19]))] = {
                "kind": comm, "cpu": sum(int(x) for x in f[11:15]) / hz, "own": (int(f[11]) + int(f[12])) / hz,
                "user": int(f[11]) / hz, "sys": int(f[12]) / hz, "minflt": int(f[7]), "rss": int(f[21]) * PAGE, "ppid": int(f[1]),
                "start": int(f[19]) / hz, "cmd": cmd.replace(b"\0", b" ").decode("utf-8", "replace")[:160]}
        except (OSError, ValueError, IndexError):
            continue
    return out


DETAIL: Path | None = None  # --cpu-detail: where the first cold up of each column leaves its processes


PAGE = os.sysconf("SC_PAGE_SIZE")


def memory_in_use() -> float:
    """Bytes of this machine's memory in use (MemTotal - MemAvailable): all testbed hosts share it."""
    with open("/proc/meminfo") as fh:
        info = {k: int(v.split()[0]) * 1024 for k, v in (ln.split(":", 1) for ln in fh)}
    return info["MemTotal"] - info["MemAvailable"]


class Ballast:
    """--hold-memory GB: one idle process that touched GB of memory and holds it for the whole run.
    Every testbed host shares this machine's memory, so a 200-host testbed fills it where a 16-host
    one does not; holding the difference gives a small testbed the same memory to work in."""

    def __init__(self, gib: float):
        code = ("import sys, time\nb = bytearray(int(float(sys.argv[1]) * (1 << 30)))\n"
                "for i in range(0, len(b), 4096): b[i] = 1\nprint('held', flush=True)\ntime.sleep(86400)")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(gib)], stdout=subprocess.PIPE)
        if self.proc.stdout.readline() != b"held\n":
            raise RuntimeError(f"--hold-memory {gib}: the holding process exited ({self.proc.wait()})")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def uptime() -> float:
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0])


def dump_detail(name: str, after: dict, before: dict, since_boot: float, wall: float) -> None:
    """Write DETAIL/<name>.json once: every testbed process at the end of a cold up, with the CPU
    it spent in the window, its own part, and when it started (seconds after the up began)."""
    if DETAIL is None or (DETAIL / f"{name}.json").exists():
        return
    rows = []
    for key, proc in after.items():
        b = before.get(key)
        switches = {}
        try:
            with open(f"/proc/{key[0]}/status") as fh:
                switches = {k: int(n) for k, n in (ln.split(":") for ln in fh if "ctxt_switches" in ln)}
        except OSError:
            pass
        rows.append({**proc, **switches, "pid": key[0], "start": round(proc["start"] - since_boot, 2),
                     "cpu": proc["cpu"] - (b["cpu"] if b else 0.0), "own": proc["own"] - (b["own"] if b else 0.0)})
    DETAIL.mkdir(parents=True, exist_ok=True)
    (DETAIL / f"{name}.json").write_text(json.dumps({"wall": wall, "processes": rows}, indent=0))


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1's CPU accounting controller


class HostCgroups:
    """Each testbed host's sshd listener in a cpuacct cgroup of its own, so everything it starts
    (sessions, host-side calls, supervisord, the agent, the ranks) is counted in cpuacct.usage,
    including processes that exited during the window. /proc alone cannot see those when their
    parent is gone too: the floor's one-shot ssh sessions took their children's CPU (the tar, the
    supervisord start, curl) with them, while the launcher's shared session lives on and showed
    all its calls, so the per-kind `sshd` row compared the launcher's whole host side with almost
    none of the floor's. None when cgroup v1's cpuacct is not mounted."""

    def __init__(self, tb) -> None:
        self.base = CPUACCT / f"up-bench-{os.getpid()}"
        self.dirs = []
        self.base.mkdir()
        for h in tb.hosts:
            d = self.base / h.name
            d.mkdir()
            (d / "cgroup.procs").write_text(f"{h.sshd_pid}\n")  # its future children inherit the group
            self.dirs.append(d)

    @classmethod
    def make(cls, tb) -> "HostCgroups | None":
        if not (CPUACCT / "cpuacct.usage").exists():
            log("no cgroup v1 cpuacct here: the per-host CPU row (incl. exited processes) reads n/a")
            return None
        return cls(tb)

    def seconds(self) -> float:
        return sum(int((d / "cpuacct.usage").read_text()) for d in self.dirs) / 1e9

    def close(self) -> None:
        for d in self.dirs:  # whatever still runs there goes back to the root group, then the dirs go
            for pid in (d / "cgroup.procs").read_text().split():
                try:
                    (CPUACCT / "cgroup.procs").write_text(f"{pid}\n")
                except OSError:  # exited meanwhile
                    pass
            d.rmdir()
        self.base.rmdir()


CGROUPS: HostCgroups | None = None


class CpuWindow:
    """CPU spent during a cold up: opened right before it starts, closed once every /health answered."""

    def __init__(self, tb):
        self.hosts, self.netns = len(tb.hosts), testbed_netns(tb)
        self.boot, self.before, self.children = uptime(), process_table(self.netns), children_cpu()
        self.machine = machine_cpu()
        self.cgroups = CGROUPS.seconds() if CGROUPS is not None else None

    def close(self, name: str, wall: float) -> dict[str, float]:
        """up_cpu (the whole machine) and cpu_split's figures per host; --cpu-detail's dump."""
        up_cpu = (machine_cpu() - self.machine) / self.hosts
        after = process_table(self.netns)
        dump_detail(name, after, self.before, self.boot, wall)
        split = cpu_split(self.before, after, self.hosts, children_cpu() - self.children)
        hosts_cg = {}
        if CGROUPS is not None and self.cgroups is not None:
            cg = (CGROUPS.seconds() - self.cgroups) / self.hosts
            # what the host calls cost: all of the hosts' CPU but what lives on after the up (ranks,
            # agent, supervisord's daemon), which /proc still sees; the rest exited or is sshd
            living = sum(v for k, v in split.items() if k.startswith("cpu_")
                         and k not in ("cpu_total", "cpu_cli", "cpu_sshd", "cpu_ssh"))
            hosts_cg = {"cpu_hosts_cg": cg, "cpu_host_calls": cg - living}
        return {"up_cpu": up_cpu, "mem_gib": memory_in_use() / (1 << 30), **hosts_cg, **split}


CPU_KINDS = ("demo rank", "agent", "supervisord", "sshd", "ssh")


def cpu_split(before: dict, after: dict, hosts: int, own: float) -> dict[str, float]:
    """CPU per host by kind of the testbed's processes between two process_table() snapshots (one
    that exited meanwhile counts with its parent: a host-side call with its sshd); ``own``: this
    script's children (the CLI, its ssh clients), measured apart; ``cpu_total`` is the sum, what
    the launcher (or the floor) cost on this machine without anybody else's work."""
    by: dict[str, float] = {"total": own}
    sys_s = faults = rss = 0.0
    # A process that died in the window was reaped by its parent, whose CPU now holds the dead one's
    # whole life: take back what it had spent before the window (a gang restart's old ranks)
    kind_of = {pid: proc["kind"] for (pid, _), proc in after.items()}
    for key, proc in before.items():
        if key not in after and proc["ppid"] in kind_of:
            kind = kind_of[proc["ppid"]] if kind_of[proc["ppid"]] in CPU_KINDS else "other"
            by[kind] = by.get(kind, 0.0) - proc["cpu"]
            by["total"] -= proc["cpu"]
    for key, proc in after.items():
        kind = proc["kind"] if proc["kind"] in CPU_KINDS else "other"
        old = before.get(key, {"cpu": 0.0, "own": 0.0, "sys": 0.0, "minflt": 0})
        spent = proc["cpu"] - old["cpu"]
        by[kind] = by.get(kind, 0.0) + spent
        by["total"] += spent
        sys_s += proc["sys"] - old["sys"]
        faults += proc["minflt"] - old["minflt"]
        rss += proc["rss"]
    # Kernel time per page fault of the processes that live on: what the machine's memory costs them
    # (it grows with how much of it is in use on this VM, not with anything a launcher does per host)
    return {**{f"cpu_{k.replace(' ', '_')}": v / hosts for k, v in by.items()}, "cpu_cli": own / hosts,
            "rss_mib": rss / hosts / (1 << 20), "faults_k": faults / hosts / 1000,
            "sys_us_per_fault": sys_s / faults * 1e6 if faults else 0.0}


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


# --- topology ---------------------------------------------------------------------------------
def topology(tb, container: str = "", name: str = DEPLOYMENT, per_host: bool = False) -> str:
    """``container``: a `container:` block for defaults (the containers column; it deploys as root,
    rootless podman is not set up on the testbed). ``per_host``: one instance (one world of 2
    ranks) per host instead of one world over all hosts (--worlds per-host)."""
    user = "root" if container else tb.user
    hosts = "".join(
        f"  - name: {h.name}\n    address: {h.address}\n    ssh: {{user: {user}, identity_file: {tb.identity_file}}}\n"
        f"    devices: {{0: 10.99.{i}.1, 1: 10.99.{i}.2}}\n" for i, h in enumerate(tb.hosts))
    names = ", ".join(h.name for h in tb.hosts)
    # The HCCL link preflight needs hccn_tool (real NPUs); the testbed has none, so it is turned off
    # the way tests/e2e does it, when this launcher version knows the key.
    schema = (REPO / "launcher" / "schemas" / "topology.schema.json").read_text()
    preflight = "  preflight: false\n" if '"preflight"' in schema else ""
    worlds = [(f"demo-{h.name}", h.name) for h in tb.hosts] if per_host else [("demo", names)]
    instances = "".join(f"""\
  - name: {inst}
    hosts: [{on}]
    devices: [0, 1]
    processes: per_device
    command: [launcher-demo-rank, --health-port, "{HEALTH}", --barrier-timeout, "60"]
""" for inst, on in worlds)
    return f"""\
version: 1
name: {name}
defaults:
  deploy_dir: {DEPLOY_DIR}
{preflight}{container}hosts:
{hosts}instances:
{instances}"""


def host_root(host: str) -> str:
    return f"{DEPLOY_DIR}/{DEPLOYMENT}/{host}"


# --- health polling -----------------------------------------------------------------------------
def health(address: str, port: int) -> dict | None:
    conn = http.client.HTTPConnection(address, port, timeout=2)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def endpoints(tb) -> list[tuple[str, str, int]]:
    return [(h.name, h.address, HEALTH + slot) for h in tb.hosts for slot in range(DEVICES)]


def wait_health(tb, ok: Callable[[tuple, dict], bool], what: str, timeout: float = WAIT_TIMEOUT) -> dict:
    """Poll every rank's /health until ok(endpoint, doc) holds for all; ranks already ok are not re-polled.

    A round stops at the first rank not ok yet: a demo rank answers only once its whole world
    has met, so the others are not ready either. Polling all of them each round cost thousands
    of refused connections a second at 200 hosts, whose kernel time lands on whatever process
    runs (on the ranks, as sys time), and the longer a column's up lasts, the more of it."""
    todo = endpoints(tb)
    done: dict[tuple, dict] = {}
    deadline = time.monotonic() + timeout
    while True:
        for ep in todo:
            if ep in done:
                continue
            doc = health(ep[1], ep[2])
            if doc is None or not ok(ep, doc):
                break
            done[ep] = doc
        if len(done) == len(todo):
            return done
        if time.monotonic() > deadline:
            missing = [f"{e[0]}:{e[2]}" for e in todo if e not in done]
            raise RuntimeError(f"timed out waiting for {what}: {len(missing)} ranks missing, e.g. {missing[:4]}")
        time.sleep(POLL)


def wait_all_up(tb, since: float, what: str) -> dict:
    return wait_health(tb, lambda ep, d: (d.get("barrier_passed_at") or 0) > since, what)


def wait_all_gone(tb, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(health(a, p) is not None for _, a, p in endpoints(tb)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: some /health still answers after {timeout:.0f} s")
        time.sleep(0.2)


def snapshot_launcher(work: Path, rev: str | None = None) -> Path:
    """Copy launcher/ (of the working tree, or of git revision ``rev``) into work/src and import it
    from there (this process and every CLI subprocess)."""
    global SNAPSHOT
    src = work / "src"
    if rev is None:
        # launcher/host/_native stays a link (to native/, copied beside it): copied as a directory,
        # the runtime would pack its files twice (zipfile's "Duplicate name" warnings)
        shutil.copytree(REPO / "launcher", src / "launcher", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(REPO / "native", src / "native", ignore=shutil.ignore_patterns("__pycache__", "*.o"))
    else:
        got = snapshot_baseline(work, rev)
        if got is None:
            raise SystemExit(f"up_bench: cannot take the launcher at {rev} from git")
        got.rename(src)
    byte_compile(src / "launcher")
    SNAPSHOT = src
    sys.path.insert(0, str(src))
    return src


def snapshot_baseline(work: Path, rev: str) -> Path | None:
    """launcher/ at git revision ``rev`` in work/base (None, said why, when git or the commit is missing)."""
    dest = work / "base"
    try:
        # native/ too: launcher/host/_native is a symlink to it (the link checker's C source)
        proc = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "launcher", "native"],
                              capture_output=True, timeout=60)
    except OSError as exc:
        log(f"baseline {rev}: no git ({exc}); its gang restart row is skipped")
        return None
    if proc.returncode != 0:
        log(f"baseline {rev}: {proc.stderr.decode().strip()}; its gang restart row is skipped")
        return None
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="tar")
    byte_compile(dest / "launcher")  # the same footing as the launcher measured
    return dest


def git_head() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", "launcher"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "launcher"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + (" + uncommitted changes under launcher/" if dirty else "")
    except OSError:
        return "?"


# --- subprocess helpers ---------------------------------------------------------------------------
def run(argv: list[str], what: str, *, env: dict | None = None, stdin: bytes | None = None,
        timeout: float = 600, check: bool = True, cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True, env=env,
                          timeout=timeout, cwd=str(cwd or SNAPSHOT or REPO))
    dt = time.monotonic() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}\n{_tail(proc.stdout)}")
    return dt, proc


def _tail(data: bytes, n: int = 30) -> str:
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])


def parallel(argvs: dict[str, list[str]], stdins: dict[str, bytes] | None, what: str,
             timeout: float = 300) -> dict[str, bytes]:
    """Start every process at once (one per host), wait for all; any failure is an error naming the host."""
    procs: dict[str, subprocess.Popen] = {}
    feeds: dict[str, bytes] = stdins or {}
    try:
        for host, argv in argvs.items():
            procs[host] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
        # communicate() one by one is fine: each has its own pipes and the OS runs them concurrently;
        # a stdin larger than the pipe buffer blocks only until that ssh has read it.
        outs, bad = {}, []
        for host, p in procs.items():
            out, err = p.communicate(feeds.get(host, b""), timeout=timeout)
            outs[host] = out
            if p.returncode != 0:
                bad.append(f"  {host}: exit {p.returncode}: {_tail(err, 5)}")
        if bad:
            raise RuntimeError(f"{what} failed on {len(bad)} hosts:\n" + "\n".join(bad))
        return outs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


# --- column 1: the launcher -------------------------------------------------------------------------
class Launcher:
    def __init__(self, tb, topo: str, python: str, src: Path | None = None):
        """``src``: where its `launcher` package is (default: the working tree's snapshot)."""
        self.tb, self.topo, self.python = tb, topo, python
        self.src = src or SNAPSHOT or REPO
        self.flags = ["--ssh-config", str(tb.ssh_config), "--known-hosts", str(tb.known_hosts)]
        path = [str(self.src)] + ([str(SNAPSHOT)] if SNAPSHOT else []) + [str(REPO)]
        # A launcher that keeps OpenSSH ControlMaster connections between commands puts them under
        # $XDG_RUNTIME_DIR: keep them in our temp dir, where close_masters() finds them.
        # Short: a unix socket path has at most 107 bytes and OpenSSH adds ~60 to this dir.
        self.xdg = Path(tempfile.mkdtemp(prefix=os.path.basename(XDG_PREFIX), dir=os.path.dirname(XDG_PREFIX)))
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(path + [os.environ.get("PYTHONPATH", "")]),
                        XDG_RUNTIME_DIR=str(self.xdg))

    def close_masters(self) -> int:
        """End every shared SSH connection the launcher left (none for a paramiko launcher); how many."""
        socks = [p for p in self.xdg.rglob("*") if p.is_socket()]
        for sock in socks:
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
        return len(socks)

    def cli(self, *argv: str, check: bool = True, pre: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
        return run([self.python, *pre, "-m", "launcher", *argv, self.topo, *self.flags], f"launcher {argv[0]}",
                   env={**self.env, **(env or {})}, check=check, cwd=self.src)

    timeline = False  # --timeline: the cold up through timeline_cli.py, which notes when each step ran

    def cold_up_cli(self) -> tuple[dict[str, float], Callable[[float], dict[str, float]]]:
        """`launcher up` on cold hosts: {"up_cli": s} and a function that, given the time until
        every /health answered, says where the time went (with --timeline; else {})."""
        if not self.timeline:
            return {"up_cli": self.cli("up")[0]}, lambda _: {}
        out = self.xdg / "timeline.json"
        t0 = time.monotonic()
        dt, _ = self.cli("up", pre=(str(Path(__file__).resolve().parent / "timeline_cli.py"),),
                         env={"UP_TIMELINE_OUT": str(out)})
        return {"up_cli": dt}, lambda cold: timeline_steps(json.loads(out.read_text()), t0, dt, cold)

    def cycle(self) -> dict[str, float]:
        r: dict[str, float] = {}
        left = self.close_masters()  # cold means no connection kept from an earlier command
        if left:
            log(f"closed {left} shared SSH connections the launcher had kept before this cold up")
        since = time.time()
        window = CpuWindow(self.tb)
        t0 = time.monotonic()
        cli, steps = self.cold_up_cli()
        r.update(cli)
        wait_all_up(self.tb, since, "launcher cold up")
        r["up_cold"] = time.monotonic() - t0
        r.update(window.close("launcher", r["up_cold"]))
        r.update(steps(r["up_cold"]))

        r["up_nochange"], proc = self.cli("up", "--json")
        started = json.loads(proc.stdout)["started"]
        if started:
            raise RuntimeError(f"no-change up restarted {started}")

        r["status"], proc = self.cli("status", "--json")
        rows = json.loads(proc.stdout)
        if not all(row["state"] == "RUNNING" for row in rows):
            raise RuntimeError(f"status: not all RUNNING: {[(x['host'], x['rank'], x['state']) for x in rows]}")

        if self.one_world:  # with a world per host, a kill restarts one host's world: not this row
            r.update(self.gang_restart())
        r["down"], _ = self.cli("down", "--purge")
        wait_all_gone(self.tb, "launcher down")
        return r

    one_world = True

    def gang_restart(self) -> dict[str, float]:
        """kill -9 one rank (a host in the middle) until every rank passed a new barrier ({} if never)."""
        before = wait_all_up(self.tb, 0, "health before the gang restart")
        victim = next(ep for ep in before if ep[0] == self.tb.hosts[len(self.tb.hosts) // 2].name)
        passed = {ep: d["barrier_passed_at"] for ep, d in before.items()}
        window = CpuWindow(self.tb)
        t0, killed = time.monotonic(), uptime()
        self.kill_rank(victim, before[victim])
        try:
            wait_health(self.tb, lambda ep, d: d["barrier_passed_at"] > passed[ep], "gang restart", timeout=90)
            wall = time.monotonic() - t0
            split = window.close(f"{type(self).__name__}-gang-restart", wall)
            # its two phases: every old rank stopped (the first new one starts only then), the new world formed
            starts = [p["start"] for p in process_table(window.netns).values() if p["kind"] == "demo rank"]
            return {"gang_restart": wall, "gr_stop": min(starts) - killed if starts else 0.0,
                    "gr_cpu": split["cpu_total"]}
        except RuntimeError as exc:  # reported, with what the agents said; the other rows still count
            log(f"gang restart did not complete: {exc}")
            self.diagnose(victim[0])
            return {}

    def kill_rank(self, victim: tuple, doc: dict) -> None:
        os.kill(int(doc["pid"]), signal.SIGKILL)  # ranks are real pids in the shared pid namespace

    def restart_cycle(self) -> dict[str, float]:
        """The baseline's column: cold up (not measured), the gang restart, down."""
        self.close_masters()
        since = time.time()
        self.cli("up")
        wait_all_up(self.tb, since, "baseline up")
        r = self.gang_restart()
        self.cli("down", "--purge")
        wait_all_gone(self.tb, "baseline down")
        return r


    def diagnose(self, victim: str) -> None:
        _, proc = self.cli("status", check=False)
        log("launcher status:\n" + proc.stdout.decode("utf-8", "replace"))
        for name in dict.fromkeys([self.tb.hosts[0].name, victim]):
            path = self.tb.host(name).path(f"{host_root(name)}/logs/launcher-agent.log")
            try:
                tail = path.read_text(errors="replace").splitlines()[-15:]
            except OSError as exc:
                tail = [str(exc)]
            log(f"{name} launcher-agent.log:\n  " + "\n  ".join(tail))


class ContainerLauncher(Launcher):
    """The same launcher and topology with every rank in a podman container (the test image,
    tests/containers.py): cold up, gang restart, down; beside the host-process figures, so the
    engine's cost shows."""

    def __init__(self, tb, topo: str, python: str, name: str):
        super().__init__(tb, topo, python)
        self.name = name

    def cycle(self) -> dict[str, float]:
        self.close_masters()
        since = time.time()
        t0 = time.monotonic()
        r = {"up_cli": self.cli("up")[0]}
        wait_all_up(self.tb, since, "launcher cold up, in containers")
        r["up_cold"] = time.monotonic() - t0
        r.update(self.gang_restart())
        r["down"], _ = self.cli("down", "--purge")
        wait_all_gone(self.tb, "launcher down, in containers")
        return r

    def kill_rank(self, victim: tuple, doc: dict) -> None:
        """/health gives the rank's pid inside its container: kill -9 the process under the
        container's init instead (what `kill -9` of a rank on the host looks like from there)."""
        from tests.containers import podman_argv
        root = f"{DEPLOY_DIR}/{self.name}/{victim[0]}"
        ids = subprocess.run(podman_argv("ps", "-q", "--filter", f"label=ascend-launcher.root={root}",
                                         "--filter", f"label=ascend-launcher.program=demo-r{doc['rank']}"),
                             capture_output=True, text=True, timeout=30).stdout.split()
        init = int(subprocess.run(podman_argv("inspect", "--format", "{{.State.Pid}}", ids[0]),
                                  capture_output=True, text=True, timeout=30).stdout.strip())
        for d in os.listdir("/proc"):
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    if d.isdigit() and int(fh.read().rsplit(b")", 1)[1].split()[1]) == init:
                        os.kill(int(d), signal.SIGKILL)
            except OSError:
                pass


def container_block(tb) -> str:
    from tests.containers import test_image, ulimit_args
    return (f"  container:\n    engine: {tb.engine}\n    image: {test_image()}\n    mounts: [\"/usr:/usr:ro\"]\n"
            f"    args: {json.dumps(ulimit_args())}\n    stop_timeout: 5\n")


# --- column 2: the parallel OpenSSH floor ---------------------------------------------------------
class Floor:
    """One `ssh` per host, all at once, with the testbed's ssh_config; no supervisor, no checks."""

    def __init__(self, tb, gen_tars: dict[str, bytes], runtime_tar: bytes, slots: dict[str, list[str]],
                 manifest_sha: dict[str, str]):
        self.tb, self.gen_tars, self.runtime_tar, self.slots = tb, gen_tars, runtime_tar, slots
        self.manifest_sha = manifest_sha

    def ssh(self, host: str, script: str) -> list[str]:
        return ["ssh", "-F", str(self.tb.ssh_config), host, "--", script]

    def up_script(self, host: str) -> str:
        r = shlex.quote(host_root(host))
        starts = "".join(
            f"nohup sh current/bin/demo.sh {s} > logs/demo-r{s}.log 2>&1 < /dev/null & echo $! > run/demo-r{s}.pid\n"
            for s in self.slots[host])
        return (f"set -e\nmkdir -p {r}/runtime/current {r}/current {r}/logs {r}/run\n"
                f"head -c {len(self.runtime_tar)} | tar -xzf - --strip-components=1 -C {r}/runtime/current\n"
                f"tar -xf - -C {r}/current\ncd {r}\n{starts}")

    def status_script(self, host: str) -> str:
        return f"cd {shlex.quote(host_root(host))} && ps -o pid=,stat=,etimes=,args= -p \"$(cat run/*.pid | paste -sd, -)\""

    def nochange_script(self, host: str) -> str:
        # What a no-op `up` must establish at least: same files, every rank alive.
        return (f"cd {shlex.quote(host_root(host))} && test \"$(sha256sum < current/manifest.json)\" = "
                f"'{self.manifest_sha[host]}  -' && for f in run/*.pid; do kill -0 \"$(cat $f)\"; done")

    def down_script(self, host: str) -> str:
        r = shlex.quote(host_root(host))
        return textwrap.dedent(f"""\
            cd {r} || exit 0
            pids=$(cat run/*.pid)
            kill $pids 2>/dev/null
            n=0
            for p in $pids; do
              while s=$(ps -o stat= -p $p) && [ "${{s#Z}}" = "$s" ]; do
                n=$((n+1)); [ $n -gt 600 ] && exit 1; sleep 0.05
              done
            done
            cd / && rm -rf {r}
            """)

    def round(self, what: str, script: Callable[[str], str], stdin: Callable[[str], bytes] | None = None) -> float:
        hosts = [h.name for h in self.tb.hosts]
        t0 = time.monotonic()
        parallel({h: self.ssh(h, script(h)) for h in hosts}, {h: stdin(h) for h in hosts} if stdin else None, what)
        return time.monotonic() - t0

    NAME = "floor"

    def cold_up(self) -> dict[str, float]:
        """One parallel round that uploads and starts, then the wait for every /health."""
        since = time.time()
        window = CpuWindow(self.tb)
        t0 = time.monotonic()
        r = {"up_cli": self.round(f"{self.NAME} up", self.up_script, lambda h: self.runtime_tar + self.gen_tars[h])}
        wait_all_up(self.tb, since, f"{self.NAME} up")
        r["up_cold"] = time.monotonic() - t0
        r["tl_health"] = r["up_cold"] - r["up_cli"]
        r.update(window.close(self.NAME, r["up_cold"]))
        return r

    def down(self) -> float:
        dt = self.round(f"{self.NAME} down", self.down_script)
        wait_all_gone(self.tb, f"{self.NAME} down")
        return dt

    def cycle(self) -> dict[str, float]:
        r = self.cold_up()
        r["up_nochange"] = self.round("floor no-change", self.nochange_script)
        r["status"] = self.round("floor status", self.status_script)
        r["down"] = self.down()
        return r


class FloorSupervisord(Floor):
    """The floor doing the launcher's starts: the same two tars, laid out as the launcher lays them
    out, then supervisord (from the shipped runtime) with the rendered config, and each group
    started by one XML-RPC call over its socket (curl), as the launcher starts them: so the same
    processes run (supervisord, the agent, the ranks). Still no state read, switch, rollback,
    key, check or wait: what is left between it and the launcher is the launcher's own work.
    (Not autostart=true: supervisord spawns autostart programs only after its first 1 s poll.)"""

    def __init__(self, *args, runtime_id: str, generations: dict[str, str], groups: dict[str, list[str]]):
        super().__init__(*args)
        self.runtime_id, self.generations, self.groups = runtime_id, generations, groups

    def up_script(self, host: str) -> str:
        r, rid, gen = shlex.quote(host_root(host)), shlex.quote(self.runtime_id), shlex.quote(self.generations[host])
        starts = "".join(
            "curl -sSf --unix-socket run/supervisor.sock -H 'Content-Type: text/xml' -o /dev/null --data "
            + shlex.quote("<?xml version='1.0'?><methodCall><methodName>supervisor.startProcessGroup</methodName>"
                          f"<params><param><value><string>{g}</string></value></param><param><value>"
                          "<boolean>0</boolean></value></param></params></methodCall>")
            + " http://localhost/RPC2\n" for g in self.groups[host])
        return (f"set -e\nmkdir -p {r}/runtime/{rid} {r}/gens/{gen} {r}/logs {r}/state\nmkdir -m 700 -p {r}/run\n"
                f"head -c {len(self.runtime_tar)} | tar -xzf - --strip-components=1 -C {r}/runtime/{rid}\n"
                f"tar -xf - -C {r}/gens/{gen}\ncd {r}\nln -s {rid} runtime/current\nln -s gens/{gen} current\n"
                "PYTHONPATH=$PWD/runtime/current/site.zip python3 -m supervisor.supervisord -c current/supervisord.conf\n"
                + starts)

    def down_script(self, host: str) -> str:
        r = shlex.quote(host_root(host))
        return textwrap.dedent(f"""\
            cd {r} || exit 0
            p=$(cat run/supervisord.pid) && kill $p
            n=0
            while kill -0 $p 2>/dev/null; do n=$((n+1)); [ $n -gt 1200 ] && exit 1; sleep 0.05; done
            cd / && rm -rf {r}
            """)

    NAME = "floor+supervisord"

    def cycle(self) -> dict[str, float]:
        return {**self.cold_up(), "down": self.down()}


# --- column 3: Ansible -------------------------------------------------------------------------------
UP_YML = """\
- name: cold up, the equivalent of `launcher up`
  hosts: bench
  gather_facts: false
  vars:
    root: "{deploy}/{{{{ inventory_hostname }}}}"
  tasks:
    - name: directories
      ansible.builtin.file: {{path: "{{{{ item }}}}", state: directory, mode: "0755"}}
      loop: ["{{{{ root }}}}/tars", "{{{{ root }}}}/runtime/current", "{{{{ root }}}}/current", "{{{{ root }}}}/logs", "{{{{ root }}}}/run"]
    - name: runtime tar
      ansible.builtin.copy: {{src: "{files}/runtime.tar.gz", dest: "{{{{ root }}}}/tars/runtime.tar.gz", mode: "0644"}}
    - name: generation tar
      ansible.builtin.copy: {{src: "{files}/gen-{{{{ inventory_hostname }}}}.tar", dest: "{{{{ root }}}}/tars/gen.tar", mode: "0644"}}
    - name: unpack runtime
      ansible.builtin.unarchive: {{src: "{{{{ root }}}}/tars/runtime.tar.gz", dest: "{{{{ root }}}}/runtime/current", remote_src: true, extra_opts: ["--strip-components=1"], creates: "{{{{ root }}}}/runtime/current/site.zip"}}
    - name: unpack generation
      ansible.builtin.unarchive: {{src: "{{{{ root }}}}/tars/gen.tar", dest: "{{{{ root }}}}/current", remote_src: true, creates: "{{{{ root }}}}/current/manifest.json"}}
    - name: start ranks (nohup), unless running
      ansible.builtin.shell: |
        for s in {slots}; do
          if [ -f run/demo-r$s.pid ] && kill -0 "$(cat run/demo-r$s.pid)" 2>/dev/null; then continue; fi
          nohup sh current/bin/demo.sh $s > logs/demo-r$s.log 2>&1 < /dev/null & echo $! > run/demo-r$s.pid
          echo started $s
        done
      args: {{chdir: "{{{{ root }}}}"}}
      register: started
      changed_when: "'started' in started.stdout"
    - name: wait for the health ports
      ansible.builtin.wait_for: {{host: "{{{{ bench_address }}}}", port: "{{{{ item }}}}", timeout: 120}}
      loop: {ports}
"""

STATUS_YML = """\
- name: status
  hosts: bench
  gather_facts: false
  tasks:
    - name: ps
      ansible.builtin.shell: ps -o pid=,stat=,etimes=,args= -p "$(cat run/*.pid | paste -sd, -)"
      args: {{chdir: "{deploy}/{{{{ inventory_hostname }}}}"}}
      changed_when: false
"""

DOWN_YML = """\
- name: down --purge
  hosts: bench
  gather_facts: false
  vars:
    root: "{deploy}/{{{{ inventory_hostname }}}}"
  tasks:
    - name: stop ranks and wait until they are gone
      ansible.builtin.shell: |
        pids=$(cat run/*.pid 2>/dev/null) || exit 0
        kill $pids 2>/dev/null
        for p in $pids; do
          while s=$(ps -o stat= -p $p) && [ "${{s#Z}}" = "$s" ]; do sleep 0.05; done
        done
      args: {{chdir: "{{{{ root }}}}", removes: "{{{{ root }}}}/run"}}
    - name: remove everything
      ansible.builtin.file: {{path: "{{{{ root }}}}", state: absent}}
"""


def ensure_ansible(venv: str) -> str | None:
    """ansible-playbook from a separate venv under /tmp; None (and why, on stderr) if it cannot be had."""
    exe = os.path.join(venv, "bin", "ansible-playbook")
    if os.access(exe, os.X_OK):
        return exe
    log(f"installing ansible-core into {venv} (pip, PyPI)")
    try:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                        "ansible-core"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log(f"ansible-core could not be installed, skipping the Ansible column: {exc} {_tail(detail, 3)}")
        return None
    return exe if os.access(exe, os.X_OK) else None


class Ansible:
    def __init__(self, tb, exe: str, work: Path, files: Path, slots: list[str]):
        self.tb, self.exe, self.work = tb, exe, work
        inv = ["[bench]"] + [f"{h.name} bench_address={h.address}" for h in tb.hosts]
        inv += ["", "[bench:vars]", f"ansible_ssh_common_args='-F {tb.ssh_config}'",
                "ansible_python_interpreter=/usr/bin/python3", f"ansible_user={tb.user}"]
        (work / "inventory.ini").write_text("\n".join(inv) + "\n")
        (work / "ansible.cfg").write_text(textwrap.dedent(f"""\
            [defaults]
            inventory = {work}/inventory.ini
            forks = 32
            host_key_checking = True
            retry_files_enabled = False
            interpreter_python = /usr/bin/python3
            [ssh_connection]
            pipelining = True
            ssh_args = -o ControlMaster=auto -o ControlPersist=60s
            """))
        fmt = dict(deploy=f"{DEPLOY_DIR}/{DEPLOYMENT}", files=str(files), slots=" ".join(slots),
                   ports=json.dumps([HEALTH + int(s) for s in slots]))
        for name, text in (("up.yml", UP_YML), ("status.yml", STATUS_YML), ("down.yml", DOWN_YML)):
            (work / name).write_text(text.format(**fmt))
        self.runs = 0

    def playbook(self, name: str) -> float:
        """One ansible-playbook run with its own, empty ControlPersist dir; its masters are closed after."""
        self.runs += 1
        cp = self.work / f"cp{self.runs}"
        cp.mkdir()
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.work / "ansible.cfg"), ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp),
                   ANSIBLE_HOME=str(self.work / "home"), ANSIBLE_LOCAL_TEMP=str(self.work / "tmp"),
                   ANSIBLE_NOCOLOR="1")
        try:
            dt, _ = run([self.exe, str(self.work / name)], f"ansible-playbook {name}", env=env)
        finally:
            self.close_masters(cp)
        return dt

    def close_masters(self, cp: Path) -> None:
        for sock in cp.iterdir():
            subprocess.run(["ssh", "-F", str(self.tb.ssh_config), "-o", f"ControlPath={sock}", "-O", "exit",
                            self.tb.hosts[0].name], capture_output=True, timeout=10)

    def cycle(self) -> dict[str, float]:
        r: dict[str, float] = {}
        since = time.time()
        t0, c0 = time.monotonic(), machine_cpu()
        r["up_cli"] = self.playbook("up.yml")
        wait_all_up(self.tb, since, "ansible up")
        r["up_cold"] = time.monotonic() - t0
        r["up_cpu"] = (machine_cpu() - c0) / len(self.tb.hosts)
        r["up_nochange"] = self.playbook("up.yml")
        r["status"] = self.playbook("status.yml")
        r["down"] = self.playbook("down.yml")
        wait_all_gone(self.tb, "ansible down")
        return r


# --- preparation shared by floor and Ansible (not timed) ---------------------------------------------
def tar_dir(path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(path.rglob("*")):
            if p.is_file():
                info = tar.gettarinfo(str(p), str(p.relative_to(path)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
    return buf.getvalue()


def kex_note(tb) -> str:
    """Which key exchange each client negotiates with the testbed's sshd (one extra, untimed login each)."""
    h = tb.hosts[0]
    ssh = subprocess.run(["ssh", "-v", "-F", str(tb.ssh_config), h.name, "true"], capture_output=True, text=True,
                         timeout=30)
    ossh = next((ln.split("kex: algorithm: ")[1].strip() for ln in ssh.stderr.splitlines()
                 if "kex: algorithm: " in ln), "?")
    try:
        import logging
        import paramiko
        said: list[str] = []

        class Grab(logging.Handler):
            def emit(self, record):
                said.append(record.getMessage())
        plog = logging.getLogger("paramiko.transport")
        grab = Grab(logging.DEBUG)
        plog.addHandler(grab)
        plog.setLevel(logging.DEBUG)
        client = paramiko.SSHClient()
        client.load_host_keys(str(tb.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(h.address, username=tb.user, key_filename=str(tb.identity_file), look_for_keys=False,
                       allow_agent=False, timeout=10)
        client.close()
        plog.removeHandler(grab)
        agreed = next((m.split("Kex: ", 1)[1].split()[0] for m in said if m.startswith("Kex: ")), None) or next(
            (m for m in said if "kex" in m.lower()), "?")
        pk = f"{agreed} (paramiko {paramiko.__version__})"
    except Exception as exc:  # informational only
        pk = f"? ({exc})"
    base = (SNAPSHOT or REPO) / "launcher"
    src = next((p.read_text() for p in (base / "deploy" / "transport.py", base / "transport.py") if p.exists()), "")
    if "OpenSshTransport" in src:  # the launcher runs the system's ssh by default (its paramiko is a fallback)
        return f"kex: OpenSSH client (floor, Ansible, launcher's default ssh transport) {ossh}; paramiko fallback {pk}"
    return f"kex: OpenSSH client (floor, Ansible) {ossh}; launcher (paramiko) {pk}"


# --- profiling (optional) -------------------------------------------------------------------------
def cprofile_cli(out: str, argv: list[str]) -> int:
    """Run the launcher CLI in this process with a cProfile per thread (fan-out threads included)."""
    import cProfile
    import pstats
    import threading
    profs: list[cProfile.Profile] = []

    def hook(frame, event, arg):  # first event in a new thread: give it its own profiler
        sys.setprofile(None)
        p = cProfile.Profile()
        profs.append(p)
        p.enable()
    main = cProfile.Profile()
    threading.setprofile(hook)
    main.enable()
    try:
        from launcher.cli import main as cli_main
        code = cli_main(argv)
    finally:
        main.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main)
    for p in profs:
        try:
            stats.add(p)
        except TypeError:
            pass  # a thread that never recorded a call
    stats.dump_stats(out)
    return code


def profile_runs(tb, launcher: Launcher, out: Path) -> None:
    """One extra cold and no-change up: phase timings from the CLI's progress lines, -X importtime, cProfile."""
    import pstats
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for kind in ("cold", "nochange"):
        # 1. wall clock per phase: timestamp each progress line as the CLI prints it
        argv = [launcher.python, "-u", "-m", "launcher", "up", launcher.topo, *launcher.flags]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=launcher.env,
                                cwd=str(SNAPSHOT or REPO), text=True)
        stamps = [(time.monotonic() - t0, ln.rstrip()) for ln in proc.stderr]
        proc.wait()
        total = time.monotonic() - t0
        lines.append(f"== up {kind}: {total:.2f} s wall (process); progress lines at:")
        lines += [f"   {t:6.2f} s  {ln}" for t, ln in stamps]
        if kind == "cold":
            wait_all_up(tb, 0, "profiled up")
        # 2. imports (only the first, run again in a separate process so it is not the one timed above)
        if kind == "cold":
            _, imp = run([launcher.python, "-X", "importtime", "-c",
                          "import launcher.cli, launcher.deploy.apply, launcher.deploy.remote"],  # what `up` imports itself
                         "importtime", env=launcher.env)
            rows = []
            for ln in imp.stderr.decode().splitlines():
                parts = ln.split("|")
                if len(parts) == 3 and parts[1].strip().isdigit():
                    rows.append((int(parts[1]), parts[2][1:]))  # name keeps its nesting indent (2 per level)
            (out / "importtime.txt").write_text(imp.stderr.decode())
            top = [(us, name) for us, name in rows if not name.startswith(" ")]
            nested = [(us, name.strip()) for us, name in rows if name.startswith("  ") and not name.startswith("    ")]
            lines.append(f"== imports: {sum(us for us, _ in top) / 1e6:.2f} s for the top-level imports; "
                         "largest first-level children:")
            lines += [f"   {us / 1e6:6.3f} s  {name}" for us, name in sorted(top + nested, reverse=True)[:10]]
        # 3. cProfile per thread: down first for a cold run again, then up (cold or no-change)
        if kind == "cold":
            launcher.cli("down", "--purge")
            wait_all_gone(tb, "profile down")
        prof = out / f"up_{kind}.prof"
        run([launcher.python, str(Path(__file__).resolve()), "--_cprofile", str(prof), "--", "up", launcher.topo,
             *launcher.flags], "profiled up", env=launcher.env)
        if kind == "cold":
            wait_all_up(tb, 0, "profiled up")
        buf = io.StringIO()
        pstats.Stats(str(prof), stream=buf).sort_stats("tottime").print_stats(18)
        (out / f"up_{kind}.tottime.txt").write_text(buf.getvalue())
        lines.append(f"== cProfile, all threads, by tottime: {out / f'up_{kind}.tottime.txt'}")
    launcher.cli("down", "--purge")
    wait_all_gone(tb, "profile down")
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text)


# --- the table -------------------------------------------------------------------------------------
ROWS = [("cold up", "up_cold"), ("no-change up", "up_nochange"), ("status", "status"), ("down", "down"),
        ("gang restart", "gang_restart"), ("gang restart, baseline", "gang_restart_base")]


TIMELINE_ROWS = (("  (cold up, one step after the other: interpreter, imports, arguments)", "tl_start"),
                 ("  (... topology compile, render, session)", "tl_compile"),
                 ("  (... lock: the first host's SSH connection, then the lock)", "tl_lock"),
                 ("  (... upload round, every host at once)", "tl_uploads"),
                 ("  (... gang start: one call to the leader, whose agent starts every member)", "tl_gang"),
                 ("  (... lock release)", "tl_release"),
                 ("  (... the rest: between the steps, exit)", "tl_other"),
                 ("  (... after the command: until every /health answered)", "tl_health"))


def timeline_steps(marks: list[list], t0: float, cli: float, cold: float) -> dict[str, float]:
    """timeline_cli.py's [[step, begin, end], ...] (monotonic; the CLI started at ``t0`` and took
    ``cli`` s; every /health answered ``cold`` s after t0) as the seconds of each step, in order."""
    took: dict[str, float] = {}
    first: dict[str, float] = {}
    for step, begin, end in marks:
        took[step] = took.get(step, 0.0) + end - begin  # an upload round run twice (a wrong guess): both
        first.setdefault(step, begin)
    lock_at = first.get("lock acquire", first.get("compile", t0))
    r = {"tl_start": first.get("compile", t0) - t0, "tl_compile": lock_at - first.get("compile", lock_at),
         "tl_lock": took.get("lock acquire", 0.0), "tl_uploads": took.get("uploads", 0.0),
         "tl_gang": took.get("gang start", 0.0), "tl_release": took.get("lock release", 0.0),
         "tl_health": cold - cli}
    r["tl_other"] = cli - sum(v for k, v in r.items() if k != "tl_health")
    return r


def median(results: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in results if key in r]
    return statistics.median(vals) if vals else None


def table(cols: dict[str, list[dict[str, float]]], hosts: int, repeat: int) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"
    head = ("", "launcher s", "OpenSSH floor s", "floor+supervisord s", "Ansible s", "launcher/floor",
            "launcher/(floor+sup)", "ansible/launcher")
    rows = []
    extra = (("  (cold up: command only)", "up_cli"), ("  (cold up: machine CPU s per host)", "up_cpu"),
             ("  (cold up: CPU s per host of the CLI + testbed only)", "cpu_total"),
             ("  (cold up: CPU s per host of the testbed hosts, cgroup: exited processes too)", "cpu_hosts_cg"),
             ("  (... of which sshd and the host-side calls: the cgroup's but what lives on)", "cpu_host_calls"),
             *((f"  (... of which {'the CLI + its ssh' if k == 'cli' else k})", f"cpu_{k.replace(' ', '_')}")
               for k in ("cli", *CPU_KINDS, "other")),
             ("  (gang restart: kill to the first new rank's start, s)", "gr_stop"),
             ("  (gang restart: CPU s per host of the testbed)", "gr_cpu"),
             ("  (cold up: testbed page faults per host, thousands)", "faults_k"),
             ("  (cold up: testbed kernel time per page fault, us)", "sys_us_per_fault"),
             ("  (cold up end: testbed RSS per host, MiB)", "rss_mib"),
             ("  (cold up end: machine memory in use, GiB)", "mem_gib"))
    boxed = "containers" in cols
    if boxed:
        head += ("in containers s", "containers/launcher")
    if any("tl_start" in r for r in cols.get("launcher", [])):
        extra = (*TIMELINE_ROWS, *extra)
    for label, key in list(ROWS) + list(extra):
        la, fl, fs, an = (median(cols.get(c, []), key) for c in ("launcher", "floor", "floor_sup", "ansible"))
        rows.append((label, f(la), f(fl), f(fs), f(an) if cols.get("ansible") else "skipped", ratio(la, fl),
                     ratio(la, fs), ratio(an, la)))
        if boxed:
            co = median(cols["containers"], key)
            rows[-1] += (f(co), ratio(co, la))
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    out = [f"{hosts} hosts x {DEVICES} ranks, median of {repeat}"]
    for r in [head] + rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def restart_note(now: float | None, base: float | None, floor_up: float | None, rev: str | None) -> str:
    """The gang restart against the floor's cold up, now and at the baseline revision."""
    def vs(x: float | None) -> str:
        if x is None:
            return "n/a"
        return f"{x:.2f} s = {x / floor_up:.2f}x the floor's cold up" if floor_up else f"{x:.2f} s"
    out = f"# gang restart: {vs(now)}"
    if rev:
        out += f"; at {rev}: {vs(base)}" + (f" (now {base / now:.2f}x faster)" if now and base else "")
    if floor_up:
        out += f"; target: at most the floor's cold up + 1 s = {floor_up + 1:.2f} s"
    return out


# --- main -------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_cprofile"]:
        return cprofile_cli(argv[1], argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-ansible", action="store_true", help="skip the Ansible column")
    ap.add_argument("--ansible-venv", default=ANSIBLE_VENV, help=f"where ansible-core is (installed if missing; "
                    f"default {ANSIBLE_VENV})")
    ap.add_argument("--baseline", metavar="REV", default=BASELINE,
                    help=f"also measure the gang restart with the launcher at git revision REV, in the same "
                    f"testbed and repeats (default {BASELINE}, the commit before the immediate first restart; "
                    "'none' skips it)")
    ap.add_argument("--launcher-rev", metavar="REV", help="measure the launcher at git revision REV instead of "
                    "the working tree (every launcher row; the bench itself is this file)")
    ap.add_argument("--containers", action="store_true", help="also run the launcher's rows with every rank "
                    "in a podman container (cold up, gang restart, down): the engine's cost beside the host figures")
    ap.add_argument("--profile", metavar="DIR", help="after the repeats, profile one cold and one no-change up "
                    "(phase times, -X importtime, cProfile of every thread) into DIR")
    ap.add_argument("--cpu-detail", metavar="DIR", help="write DIR/<column>.json: every testbed process at "
                    "the end of the first cold up of each column, with its CPU in the window and its start time")
    ap.add_argument("--timeline", action="store_true",
                    help="run the launcher's cold up through timeline_cli.py and add rows saying how long each of "
                    "its steps took, one after the other (imports, lock, uploads, gang start, release, /health)")
    ap.add_argument("--worlds", choices=("one", "per-host"), default="one",
                    help="one world (one instance) over all hosts, started as a gang (default), or one per host: "
                    "each host's ranks start inside its upload, as the floors start theirs (no gang start, no "
                    "gang restart row; only with --columns launcher,floor_sup)")
    ap.add_argument("--columns", default="launcher,floor,floor_sup", help="which of launcher, floor, floor_sup "
                    "to run (comma-separated; default all three): a repeat of one column alone costs less, and "
                    "with --hold-memory a column runs in the memory another one filled")
    ap.add_argument("--hold-memory", metavar="GIB", type=float, default=0.0,
                    help="hold GIB of touched memory in one idle process for the whole run: every testbed host "
                    "shares this machine's memory, so this gives a small testbed a large one's memory to work in")
    args = ap.parse_args(argv)
    wanted = set(args.columns.split(","))
    if args.worlds == "per-host" and (not wanted <= {"launcher", "floor_sup"} or args.containers
                                      or args.baseline != "none" or not args.no_ansible):
        ap.error("--worlds per-host: only with --columns launcher,floor_sup --baseline none --no-ansible "
                 "(the bare floor, Ansible and the gang restart rows assume one world)")
    if not wanted or not wanted <= {"launcher", "floor", "floor_sup"}:
        ap.error(f"--columns {args.columns!r}: a comma-separated subset of launcher, floor, floor_sup")
    global DETAIL, CGROUPS
    DETAIL = Path(args.cpu_detail) if args.cpu_detail else None
    if os.geteuid() != 0:
        print("up_bench: needs root (the testbed uses network namespaces)", file=sys.stderr)
        return 2
    venv_py = REPO / ".venv" / "bin" / "python"
    python = str(venv_py) if venv_py.exists() else sys.executable

    ansible_exe = None if args.no_ansible else ensure_ansible(args.ansible_venv)

    def on_term(signum, frame):  # SIGTERM/SIGHUP: unwind like Ctrl-C so the testbed comes down
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    from tests.testbed import Testbed
    work = Path(tempfile.mkdtemp(prefix="up-bench-"))
    snapshot_launcher(work, args.launcher_rev)
    version = git_head() if args.launcher_rev is None else f"{args.launcher_rev} (--launcher-rev)"
    log(f"launcher measured: {version} (copied to {SNAPSHOT})")
    base_src = snapshot_baseline(work, args.baseline) if args.baseline != "none" else None
    tb = launcher = ballast = None
    cols: dict[str, list[dict[str, float]]] = {"launcher": [], "floor": [], "floor_sup": []}
    try:
        t0 = time.monotonic()
        boxes = None
        if args.containers:
            from tests.containers import unavailable_reason
            boxes = unavailable_reason()
            if boxes:
                log(f"containers column skipped: {boxes}")
        if args.hold_memory:
            ballast = Ballast(args.hold_memory)
            log(f"holding {args.hold_memory:g} GiB; machine memory in use {memory_in_use() / (1 << 30):.1f} GiB")
        tb = Testbed.up(args.hosts, containers=args.containers and not boxes)
        CGROUPS = HostCgroups.make(tb)
        log(f"testbed {tb.id}: {args.hosts} hosts in {time.monotonic() - t0:.2f} s ({tb.root})")
        topo = work / "topology.yaml"
        topo.write_text(topology(tb, per_host=args.worlds == "per-host"))
        launcher = Launcher(tb, str(topo), python)
        launcher.one_world = args.worlds == "one"
        launcher.timeline = args.timeline
        baseline = Launcher(tb, str(topo), python, src=base_src) if base_src else None
        boxed = None
        if tb.containers:  # its own deployment name: one container storage serves every testbed here
            boxed_topo = work / "topology-containers.yaml"
            boxed_topo.write_text(topology(tb, container_block(tb), f"{DEPLOYMENT}-c{tb.id}"))
            boxed = ContainerLauncher(tb, str(boxed_topo), python, f"{DEPLOYMENT}-c{tb.id}")
            cols["containers"] = []

        # floor / Ansible inputs, made once and not timed: the rendered generation and the runtime tar
        render_dir = work / "render"
        run([python, "-m", "launcher", "render", str(topo), "-o", str(render_dir)], "launcher render", env=launcher.env)
        from launcher.deploy.runtime import build_runtime
        # what the launcher sends a cold host (the runtime gzipped), as a whole .tar.gz for `tar -xz`
        runtime_tar = gzip.compress(build_runtime().members + b"\0" * 1024, compresslevel=6, mtime=0)
        files = work / "files"
        files.mkdir()
        (files / "runtime.tar.gz").write_bytes(runtime_tar)
        gen_tars, slots, msha = {}, {}, {}
        import hashlib
        for h in tb.hosts:
            gen_tars[h.name] = tar_dir(render_dir / h.name)
            (files / f"gen-{h.name}.tar").write_bytes(gen_tars[h.name])
            manifest = (render_dir / h.name / "manifest.json").read_bytes()
            msha[h.name] = hashlib.sha256(manifest).hexdigest()
            slots[h.name] = [p["argv"][1] for p in json.loads(manifest)["programs"]]
        gen_size = statistics.median(len(t) for t in gen_tars.values())
        log(f"runtime tar {len(runtime_tar) / 1024:.0f} KiB, generation tar {gen_size / 1024:.0f} KiB per host")
        kex = kex_note(tb)
        log(kex)
        floor = Floor(tb, gen_tars, runtime_tar, slots, msha)
        groups = {h.name: sorted({p["owner"] for p in json.loads((render_dir / h.name / "manifest.json").read_bytes())
                                  ["programs"]}) for h in tb.hosts}
        floor_sup = FloorSupervisord(tb, gen_tars, runtime_tar, slots, msha, runtime_id=build_runtime().id,
                                     generations={h.name: "floor" for h in tb.hosts}, groups=groups)
        ansible = None
        if ansible_exe:
            (work / "ansible").mkdir()
            ansible = Ansible(tb, ansible_exe, work / "ansible", files, slots[tb.hosts[0].name])
            cols["ansible"] = []

        load0 = os.getloadavg()
        for i in range(args.repeat):
            for name, col in (("launcher", launcher), ("baseline", baseline), ("containers", boxed),
                              ("floor", floor), ("floor_sup", floor_sup), ("ansible", ansible)):
                if col is None or name not in wanted | {"ansible", "baseline", "containers"}:
                    continue
                if name == "baseline" and not cols["launcher"]:
                    continue
                if col is baseline:  # its gang restart only, beside the launcher's own of this repeat
                    res = {f"{k}_base": v for k, v in baseline.restart_cycle().items()}
                    cols["launcher"][-1].update(res)
                else:
                    res = col.cycle()
                    cols[name].append(res)
                log(f"repeat {i + 1}/{args.repeat} {name}: " + " ".join(f"{k}={v:.2f}" for k, v in res.items())
                    + f" (load {os.getloadavg()[0]:.1f})")

        print(table(cols, args.hosts, args.repeat))
        print(f"# launcher {version} (last commit touching launcher/); load average before/after the repeats: "
              f"{load0[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (anything else running skews all columns)")
        print(f"# {kex}; Ansible: pipelining on, ControlPersist 60s inside one playbook run, a fresh "
              f"control dir per run (no reuse across runs)" if ansible else f"# {kex}")
        m = {k: median(cols["launcher"], k) for _, k in ROWS}
        print(restart_note(m["gang_restart"], m["gang_restart_base"], median(cols["floor"], "up_cold"),
                           args.baseline if base_src else None))

        def fig(name: str, col: str, key: str) -> str:
            v = median(cols[col], key)
            return f"{name}={v:.3f}" if v is not None else f"{name}=n/a"
        parts = [f"hosts={args.hosts}"] + [fig(k, "launcher", k) for _, k in ROWS]
        parts += [fig("floor_up", "floor", "up_cold"), fig("floor_sup_up", "floor_sup", "up_cold"),
                  fig("up_cpu_per_host", "launcher", "up_cpu"), fig("floor_up_cpu_per_host", "floor", "up_cpu"),
                  fig("cpu_per_host", "launcher", "cpu_total"), fig("mem_gib", "launcher", "mem_gib"),
                  fig("hosts_cpu_per_host", "launcher", "cpu_hosts_cg"),
                  fig("floor_sup_hosts_cpu_per_host", "floor_sup", "cpu_hosts_cg"),
                  fig("host_calls_cpu_per_host", "launcher", "cpu_host_calls"),
                  fig("floor_host_calls_cpu_per_host", "floor", "cpu_host_calls"),
                  fig("floor_sup_host_calls_cpu_per_host", "floor_sup", "cpu_host_calls")]
        if boxed is not None:
            parts += [f"containers_{k}={v:.3f}" if (v := median(cols["containers"], k)) is not None
                      else f"containers_{k}=n/a" for k in ("up_cold", "gang_restart", "down")]
        an = median(cols.get("ansible", []), "up_cold")
        parts.append(f"ansible_up={an:.3f}" if an is not None else "ansible_up=skipped")
        # the cold up against the floor that starts the same supervisord (else the bare floor)
        up, fl = m["up_cold"], median(cols["floor_sup"], "up_cold") or median(cols["floor"], "up_cold")
        st, fst = m["status"], median(cols["floor"], "status") or median(cols["floor_sup"], "status")
        parts += [f"floor_seconds={fl:.3f}" if fl else "floor_seconds=n/a",
                  f"ratio={up / fl:.2f}" if up and fl else "ratio=n/a",
                  f"status_ratio={st / fst:.2f}" if st and fst else "status_ratio=n/a"]
        summary = " ".join(parts)
        sys.stdout.flush()
        if args.profile:
            profile_runs(tb, launcher, Path(args.profile))
        print(summary, flush=True)
        return 0
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}); tearing down")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the teardown
        if ballast is not None:
            ballast.close()
        if launcher is not None:
            launcher.close_masters()
            shutil.rmtree(launcher.xdg, ignore_errors=True)
        if CGROUPS is not None:
            try:
                CGROUPS.close()
            except OSError as exc:
                log(f"could not remove the bench's cgroups under {CGROUPS.base}: {exc}")
        if tb is not None:
            try:
                tb.down()
                log(f"testbed {tb.id} down")
            except Exception as exc:
                log(f"testbed down failed: {exc}; run `python -m tests.testbed down --all`")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
