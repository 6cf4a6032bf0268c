"""Seed 003 (openYuanrong datasystem) end to end on the network-namespace testbed.

A real etcd (Debian etcd-server) on h1, probed with `etcdctl endpoint health`; one datasystem
worker per host depending on it (the stand-in `tests/fakes/dscli`, a fake only at the vendor
boundary: it checks the argv the launcher renders and its locked-memory limit, registers in the
real etcd and listens on its worker port); one demo-rank model per host with
`datasystem: ds-worker`, so its DS_WORKER_ADDR is its own host's worker.

Locked memory: the launch script runs `ulimit -l <memlock>`, which as the unprivileged user
`lt` can only raise the soft limit up to the hard one. The testbed's sshd (and so every session
and the launcher's supervisord) inherits the test process's limits; real hosts set them with
pam_limits (`lt hard memlock unlimited`), which the testbed's sshd (UsePAM no) does not run.
So the `memlock` fixture plays limits.conf: it sets each host sshd's limits with prlimit(2),
a small soft limit (so only the launch script can lift it) and a hard limit of unlimited where
this machine allows raising it (CAP_SYS_RESOURCE). Where it does not (a VM without
CAP_SYS_RESOURCE, where even root gets "Operation not permitted"), the topology asks for the
hard limit in KiB instead and the fake is told to require exactly that; either way the fake
refuses to start unless the script applied the topology's value.

"Kill etcd": SIGSTOP. A stopped etcd is what a wedged etcd looks like (the process is there,
supervisord says RUNNING, nothing answers), and the agent does not restart it behind the
test's back, as it would after kill -9. SIGCONT brings it back.
"""
from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ssh_flags, cli_on_testbed as cli, ROOT, run_cli, topology_head, host_entry, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 3
NAME = "yr"
DEPLOY = "/srv/launcher"
FAKE = ROOT / "tests" / "fakes" / "dscli"
FAKE_ON_HOST = "/srv/fakes/dscli"  # /srv is private per host: each host gets its own copy
ETCD_CLIENT, ETCD_PEER = 2379, 2380
WORKER_PORT = 31501
HEALTH = 18810
SOFT_MEMLOCK = 64 * 1024  # bytes: what sessions start with, below any value the topology asks for
NUMA = ["--cpunodebind", "0", "--localalloc"]


def topology(tb: Testbed, memlock: str, worker_note: str = "1") -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.97.{i}.1}}") for i, h in enumerate(tb.hosts))
    names = ", ".join(h.name for h in tb.hosts)
    memlock_yaml = "unlimited" if memlock == "unlimited" else int(memlock)
    models = "".join(
        f"  - name: model-{h.name}\n    hosts: [{h.name}]\n    devices: [0]\n    datasystem: ds-worker\n"
        f"    command: [launcher-demo-rank, --health-port, '{HEALTH}']\n" for h in tb.hosts)
    return f"""\
{topology_head(NAME, DEPLOY)}hosts:
{hosts}services:
  - name: etcd
    kind: etcd
    hosts: [{tb.hosts[0].name}]
    client_port: {ETCD_CLIENT}
    peer_port: {ETCD_PEER}
  - name: ds-worker
    kind: datasystem
    hosts: [{names}]
    etcd: etcd
    port: {WORKER_PORT}
    dscli: {FAKE_ON_HOST}
    env: {{DSCLI_FAKE_REQUIRED_MEMLOCK: '{memlock}', WORKER_NOTE: '{worker_note}'}}
    limits:
      memlock: {memlock_yaml}
      numa: {{cpunodebind: 0, localalloc: true}}
instances:
{models}"""


@pytest.fixture(scope="module")
def memlock(testbed: Testbed) -> str:
    """Set the hosts' sshd memlock limits (see the module doc); the value the topology asks for."""
    grant = _can_raise_memlock()
    value = "unlimited"
    for h in testbed.hosts:
        assert h.sshd_pid is not None
        _soft, hard = resource.prlimit(h.sshd_pid, resource.RLIMIT_MEMLOCK)
        if grant:
            hard = resource.RLIM_INFINITY
        else:
            value = "unlimited" if hard == resource.RLIM_INFINITY else str(hard // 1024)
        resource.prlimit(h.sshd_pid, resource.RLIMIT_MEMLOCK, (min(SOFT_MEMLOCK, hard), hard))
    return value


def _can_raise_memlock() -> bool:
    """Whether this machine lets root raise a hard memlock limit (CAP_SYS_RESOURCE)."""
    if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY:
        return True
    probe = subprocess.run(["sh", "-c", "ulimit -l unlimited"], capture_output=True)  # a child: ours stays
    return probe.returncode == 0


@pytest.fixture(scope="module")
def deployment(testbed: Testbed, memlock: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The fake on every host, and a topology writer; `down --purge` at the end, whatever happened."""
    for h in testbed.hosts:
        dest = h.path(FAKE_ON_HOST)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FAKE, dest)
        os.chmod(dest, 0o755)
    tmp = tmp_path_factory.mktemp("yr")
    state: dict[str, Any] = {"last": None, "stopped": None}

    def write(worker_note: str = "1") -> str:
        path = tmp / f"topo-{worker_note}.yaml"
        path.write_text(topology(testbed, memlock, worker_note))
        state["last"] = str(path)
        return str(path)

    state["write"] = write
    yield state
    if state["stopped"]:
        _signal(state["stopped"], signal.SIGCONT)  # never leave a stopped etcd for down to wait on
    if state["last"]:
        run_cli("down", state["last"], "--purge", *ssh_flags(testbed))




def status(tb: Testbed, path: str) -> list[dict[str, Any]]:
    return json.loads(cli(tb, "status", path, "--json").out)


def rows_of(rows: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["instance"] == owner]


def start_ticks(pid: int) -> int:
    """A process's start time in clock ticks since boot (one kernel, one pid namespace: comparable)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(") ", 1)[1].split()[19])


def soft_memlock(pid: int) -> str:
    """From /proc: prlimit(2) on another user's process would need CAP_SYS_RESOURCE."""
    line = next(ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if ln.startswith("Max locked memory"))
    return line.split()[3]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


def etcd_workers(tb: Testbed) -> dict[str, dict[str, Any]]:
    """What the real etcd holds under /datasystem/workers/, asked with etcdctl over the bridge."""
    proc = subprocess.run(["etcdctl", "--endpoints", f"http://{tb.hosts[0].address}:{ETCD_CLIENT}",
                           "--command-timeout", "3s", "get", "--prefix", "/datasystem/workers/", "-w", "json"],
                          capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})
    assert proc.returncode == 0, proc.stderr
    kvs = json.loads(proc.stdout).get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"])) for kv in kvs}


def worker_log(tb: Testbed, host: str) -> str:
    return tb.hosts[[h.name for h in tb.hosts].index(host)].path(
        f"{DEPLOY}/{NAME}/{host}/logs/ds-worker.log").read_text()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def all_registered(tb: Testbed, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """etcd's worker keys, once there is one per host and each names the pid status shows."""
    keys = etcd_workers(tb)
    want = {f"/datasystem/workers/{h.address}:{WORKER_PORT}": r["pid"]
            for h in tb.hosts for r in rows_of(rows, "ds-worker") if r["host"] == h.name}
    ok = set(keys) == set(want) and all(keys[k]["pid"] == pid for k, pid in want.items())
    return keys if ok else None


# --- the fake itself: it must reject what the launcher does not render ------------------------

@pytest.mark.parametrize("argv, message", [
    (["stop", "-w"], "expected the `start` command"),
    (["start", "--numa", "0", "-w"], "unknown dscli option '--numa'"),
    (["start", "--worker_address", "1.2.3.4:1", "--etcd_address", "1.2.3.4:2"], "unknown dscli option"),
    (["start", "-w", "--worker_address", "1.2.3.4:1", "--arena_per_tenant", "1"], "--etcd_address is required"),
    (["start", "-w", "--worker_address", "1.2.3.4:1", "--etcd_address", "e:2", "--arena_per_tenant", "1",
      "--enable_huge_tlb", "yes"], "takes true or false"),
    (["start", "-w", "--worker_address", "1.2.3.4:1", "--etcd_address", "e:2", "--arena_per_tenant", "1",
      "--remote_h2d_device_ids", "0", "--enable_huge_tlb", "true"], "needs --enable_huge_tlb true --enable_fallocate false"),
])
def test_fake_dscli_rejects_other_command_lines(argv: list[str], message: str) -> None:
    proc = subprocess.run([str(FAKE), *argv], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr and "usage: dscli start" in proc.stderr


def test_fake_dscli_refuses_a_low_memlock_limit() -> None:
    argv = ["start", "-w", "--worker_address", "127.0.0.1:1", "--etcd_address", "127.0.0.1:2",
            "--arena_per_tenant", "1"]
    proc = subprocess.run(["sh", "-c", f"ulimit -S -l 64 && exec {FAKE} \"$@\"", "sh", *argv],
                          capture_output=True, text=True, timeout=30, env={**os.environ,
                                                                          "DSCLI_FAKE_REQUIRED_MEMLOCK": "unlimited"})
    assert proc.returncode == 3
    assert "max locked memory (ulimit -l) is 64, the worker needs unlimited" in proc.stderr


# --- end to end -----------------------------------------------------------------------------

def test_up_starts_etcd_then_workers_then_models(testbed: Testbed, deployment: dict[str, Any], memlock: str) -> None:
    path = deployment["write"]()
    run = cli(testbed, "up", path)
    assert run.code == 0, run.err
    # the CLI's own account: each dependency ready before what waits for it starts
    err = run.err
    assert err.index("etcd is ready") < err.index("started ds-worker") < err.index("ds-worker is ready") \
        < err.index("started model-"), err

    rows = status(testbed, path)
    assert all(r["state"] == "RUNNING" for r in rows), rows
    # the processes' own start times say the same: etcd, then every worker, then every model
    etcd = rows_of(rows, "etcd")
    workers = rows_of(rows, "ds-worker")
    models = [r for r in rows if r["instance"].startswith("model-")]
    assert len(etcd) == 1 and len(workers) == len(models) == TESTBED_HOSTS
    assert start_ticks(etcd[0]["pid"]) < min(start_ticks(r["pid"]) for r in workers)
    assert max(start_ticks(r["pid"]) for r in workers) < min(start_ticks(r["pid"]) for r in models)
    assert Path(f"/proc/{etcd[0]['pid']}/comm").read_text().strip() == "etcd"

    # every worker is in the real etcd, under its own address, with the pid status shows
    keys = wait_for(lambda: all_registered(testbed, status(testbed, path)), timeout=30,
                    what="one etcd key per worker")
    by_host = {r["host"]: r for r in workers}
    for h in testbed.hosts:
        doc = keys[f"/datasystem/workers/{h.address}:{WORKER_PORT}"]
        assert doc["hostname"] == h.name
        # the launcher filled the addresses from the topology, and the NUMA flags reached dscli
        assert doc["worker_args"]["--worker_address"] == f"{h.address}:{WORKER_PORT}"
        assert doc["worker_args"]["--etcd_address"] == f"{testbed.hosts[0].address}:{ETCD_CLIENT}"
        assert doc["numa"] == NUMA
        # the fake refuses to start unless the launch script applied the memlock limit
        assert doc["memlock"] == memlock
        assert soft_memlock(by_host[h.name]["pid"]) == ("unlimited" if memlock == "unlimited"
                                                        else str(int(memlock) * 1024))
        log = worker_log(testbed, h.name)
        assert f"NUMA flags: {' '.join(NUMA)}" in log
        # etcd was ready before the worker started: its first etcd call succeeded
        assert "etcd unreachable" not in log.split("registered /datasystem/workers/", 1)[0], log
    # etcd itself: sessions start with the small soft limit; only the worker's script raised it
    assert soft_memlock(etcd[0]["pid"]) == str(SOFT_MEMLOCK)

    # each model talks to its own host's worker
    for r in models:
        host = next(h for h in testbed.hosts if h.name == r["host"])
        env = environ(r["pid"])
        assert env["DS_WORKER_ADDR"] == f"{host.address}:{WORKER_PORT}"
        assert env["DS_ENABLE_REMOTE_H2D"] == "0" and env["PYTHONHASHSEED"] == "0"


def test_wedged_etcd_holds_back_what_depends_on_it(testbed: Testbed, deployment: dict[str, Any]) -> None:
    path = deployment["write"]()
    assert cli(testbed, "up", path).code == 0
    rows = wait_for(lambda: (lambda r: r if all_registered(testbed, r) else None)(status(testbed, path)),
                    timeout=30, what="every worker registered")
    etcd_pid = rows_of(rows, "etcd")[0]["pid"]
    dependents = {r["program"] + "@" + r["host"]: r["pid"] for r in rows if r["instance"] != "etcd"}

    os.kill(etcd_pid, signal.SIGSTOP)
    deployment["stopped"] = etcd_pid
    try:
        changed = deployment["write"](worker_note="2")  # the workers' env changes: they must restart ...
        run = cli(testbed, "up", changed, "--ready-timeout", "5")
        # ... but not while etcd does not answer
        assert run.code == 1, run.err
        assert "etcd did not become ready" in run.err, run.err
        assert "ds-worker" in run.err.split("etcd did not become ready", 1)[1], run.err
        # in etcdctl's own words, not a probe killed at its timeout
        assert f"http://{testbed.hosts[0].address}:{ETCD_CLIENT} is unhealthy" in run.err, run.err
        rows = status(testbed, changed)
        assert {r["program"] + "@" + r["host"]: r["pid"] for r in rows if r["instance"] != "etcd"} == dependents
        # nothing is taken down for a change that cannot be applied yet: the workers keep
        # running their previous config, and status says what they wait for
        workers = rows_of(rows, "ds-worker")
        assert [r["waiting_on"] for r in workers] == [["etcd"]] * TESTBED_HOSTS, workers
        assert all(r["state"] == "RUNNING" for r in workers), workers
        table = cli(testbed, "status", changed)
        assert table.code == 1, table.out  # not what the topology wants yet
        for h in testbed.hosts:
            assert f"{h.name}: ds-worker: waits for etcd" in table.out, table.out

        # a worker that dies meanwhile: its agent holds the restart until etcd answers
        h2 = testbed.hosts[1].name
        os.kill(next(r["pid"] for r in workers if r["host"] == h2), signal.SIGKILL)

        def worker_on_h2(state: str) -> dict[str, Any] | None:
            row = next(r for r in rows_of(status(testbed, changed), "ds-worker") if r["host"] == h2)
            return row if row["state"] == state else None
        held = wait_for(lambda: worker_on_h2("WAITING"), timeout=60, what=f"{h2}'s worker held for etcd")
        assert held["waiting_on"] == ["etcd"] and held["restarts"] == 0, held
    finally:
        os.kill(etcd_pid, signal.SIGCONT)
        deployment["stopped"] = None
    wait_for(lambda: worker_on_h2("RUNNING"), timeout=60, what=f"the agent restarting {h2}'s worker")

    # etcd answers again: the same up now restarts the workers, which register again
    run = cli(testbed, "up", changed)
    assert run.code == 0, run.err
    rows = status(testbed, changed)
    assert all(r["state"] == "RUNNING" and not r["waiting_on"] for r in rows), rows
    assert rows_of(rows, "etcd")[0]["pid"] == etcd_pid  # the same etcd, woken up, not replaced
    workers = rows_of(rows, "ds-worker")
    assert all(r["pid"] != dependents[r["program"] + "@" + r["host"]] for r in workers)
    assert all(environ(r["pid"])["WORKER_NOTE"] == "2" for r in workers)
    wait_for(lambda: all_registered(testbed, status(testbed, changed)), timeout=30,
             what="every restarted worker registered in etcd again")


def test_etcd_down_when_nothing_runs_yet_leaves_dependents_waiting(testbed: Testbed,
                                                                   deployment: dict[str, Any]) -> None:
    """Here the dependents are not running when `up` comes, so they are WAITING. etcd cannot come
    back because another process holds its client port (etcd exits at once, the agent's restarts
    fail the same way); the squatter accepts connections and never answers, as a wedged etcd."""
    path = deployment["write"]()
    assert cli(testbed, "up", path).code == 0
    assert cli(testbed, "down", path).code == 0  # everything stopped, files kept
    h1 = testbed.hosts[0]
    assert h1.sshd_pid is not None
    squatter = subprocess.Popen(
        ["nsenter", "-t", str(h1.sshd_pid), "-m", "-n", "-u", "--", "/usr/bin/python3", "-c", SQUAT, str(ETCD_CLIENT)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "listening"
        run = cli(testbed, "up", path, "--ready-timeout", "5")
        assert run.code == 1, run.err
        assert "etcd did not become ready" in run.err, run.err
        waiters = run.err.split("etcd did not become ready", 1)[1]
        assert "ds-worker" in waiters, run.err
        rows = status(testbed, path)
        workers = rows_of(rows, "ds-worker")
        assert all(r["state"] == "WAITING" and r["waiting_on"] == ["etcd"] for r in workers), workers
        models = [r for r in rows if r["instance"].startswith("model-")]
        assert all(r["state"] == "WAITING" and r["waiting_on"] == ["ds-worker"] for r in models), models
        table = cli(testbed, "status", path)
        assert table.code == 1 and "WAITING (etcd)" in table.out, table.out
        for h in testbed.hosts:  # not started: no worker and no model process anywhere
            assert not [a for a in _ours_in(h.netns) if "dscli" in a or "demo" in a], h.name
    finally:
        squatter.kill()
        squatter.wait()

    run = cli(testbed, "up", path)
    assert run.code == 0, run.err
    rows = status(testbed, path)
    assert all(r["state"] == "RUNNING" and not r["waiting_on"] for r in rows), rows
    wait_for(lambda: all_registered(testbed, status(testbed, path)), timeout=30,
             what="every worker registered once etcd is back")


# Holds a port, accepts connections and never answers them.
SQUAT = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64); print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
"""


def test_down_purge_leaves_nothing(testbed: Testbed, deployment: dict[str, Any]) -> None:
    path = deployment["last"] or deployment["write"]()
    pids = [r["pid"] for r in status(testbed, path) if r["pid"]]
    run = cli(testbed, "down", path, "--purge")
    assert run.code == 0, run.err
    for h in testbed.hosts:
        # all but the fencing records (the high-water mark, the lock's token counter): a purged
        # host must still refuse a command whose lease was broken
        root = h.path(f"{DEPLOY}/{NAME}/{h.name}")
        assert {str(p.relative_to(root)) for p in root.rglob("*")} <= {"state", "state/fence", "state/lock.json"}
        wait_for(lambda: not _ours_in(h.netns), timeout=30, what=f"nothing of ours left on {h.name}")
    for pid in pids:
        wait_for(lambda: not _alive(pid), timeout=15, what=f"pid {pid} gone")


def _ours_in(netns: str) -> list[str]:
    """etcd, workers, models, supervisord or the agent still in a host's network namespace."""
    out = []
    for pid in subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if _alive(int(pid)) and any(k in args for k in ("etcd", "dscli", "supervisord", "launcher.host.agent",
                                                         "launcher-demo-rank", "demo_rank")):
            out.append(args)
    return out


def _alive(pid: int) -> bool:
    """Exists and is not a zombie."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return False
