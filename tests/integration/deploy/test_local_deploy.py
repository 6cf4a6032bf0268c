"""`up`, `status`, gang restart and `down` for real: local transport, real supervisord, real processes.

Two "hosts" on this machine (127.0.0.1 and 127.0.0.2, each with its own root), so the
agents talk to each other over TCP exactly as on a cluster.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, alive, run_cli, wait_for

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(root: Path, *, model_env: str = "a", crash: bool = False, restart_max: int = 3) -> str:
    rank_cmd = '[sh, -c, "exit 3"]' if crash else "[sleep, '600']"
    return f"""\
version: 1
name: itest
defaults:
  deploy_dir: {root}
  agent_port: {free_port.cached}
  restart: {{max: {restart_max}, window: 600}}
  preflight: false
hosts:
  - name: node-a
    address: 127.0.0.1
    transport: local
    devices: {{0: 10.213.200.1, 1: 10.213.200.2}}
  - name: node-b
    address: 127.0.0.2
    transport: local
    devices: {{0: 10.213.201.1, 1: 10.213.201.2}}
instances:
  - name: model
    hosts: [node-a, node-b]
    devices: [0]
    command: {rank_cmd}
    env: {{MODEL_VERSION: "{model_env}"}}
  - name: other
    hosts: [node-a, node-b]
    devices: [1]
    command: [sleep, "600"]
"""


@pytest.fixture
def deployment(tmp_path):
    free_port.cached = free_port()
    files = []
    # short: supervisord's socket lives under it, and a unix socket path holds at most 107 bytes
    deploy = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))
    (tmp_path / "deploy").symlink_to(deploy)

    def write(**kw) -> str:
        path = tmp_path / "topo.yaml"
        path.write_text(topology(deploy, **kw))
        files.append(str(path))
        return str(path)

    yield write
    if files:
        run_cli("down", files[-1], "--purge")
    shutil.rmtree(deploy, ignore_errors=True)


def status(path: str) -> list[dict]:
    run = run_cli("status", path, "--json")
    return json.loads(run.out)


def pids(path: str, instance: str) -> dict[int, int]:
    return {r["rank"]: r["pid"] for r in status(path) if r["instance"] == instance}


def all_running(path: str) -> bool:
    rows = status(path)
    return bool(rows) and all(r["state"] == "RUNNING" for r in rows)


def test_up_is_idempotent_and_a_change_restarts_only_its_instance(deployment):
    path = deployment()
    run = run_cli("up", path)
    assert run.code == 0, run.err
    wait_for(lambda: all_running(path), what="all ranks RUNNING")
    rows = status(path)
    assert {(r["instance"], r["host"], r["rank"]) for r in rows} == {
        ("model", "node-a", 0), ("model", "node-b", 1), ("other", "node-a", 0), ("other", "node-b", 1)}
    before = {i: pids(path, i) for i in ("model", "other")}
    gen = rows[0]["generation"]

    again = run_cli("up", path, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["started"] == []
    assert {i: pids(path, i) for i in ("model", "other")} == before  # same PIDs: nothing restarted

    path = deployment(model_env="b")
    changed = run_cli("up", path, "--json")
    assert changed.code == 0, changed.err
    assert json.loads(changed.out)["started"] == ["model"]
    wait_for(lambda: all_running(path), what="RUNNING after change")
    after = {i: pids(path, i) for i in ("model", "other")}
    assert after["other"] == before["other"]
    assert set(after["model"].values()).isdisjoint(before["model"].values())
    assert {r["generation"] for r in status(path)} != {gen}


def test_kill_one_rank_restarts_the_gang_on_all_hosts(deployment):
    path = deployment()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="all ranks RUNNING")
    before = pids(path, "model")
    os.kill(before[1], signal.SIGKILL)  # rank 1 lives on node-b; the leader is node-a

    def restarted():
        rows = [r for r in status(path) if r["instance"] == "model"]
        return all(r["state"] == "RUNNING" and r["restarts"] == 1 for r in rows) and rows
    try:
        rows = wait_for(restarted, what="gang restart")
    except AssertionError:  # seen once in a CI run (1 in 12): say what the agents did
        logs = sorted((Path(path).parent / "deploy" / "itest").glob("*/logs/*.log"))
        raise AssertionError(f"no gang restart; status {status(path)}\n" + "\n".join(
            f"== {f}\n{f.read_text(errors='replace')[-3000:]}" for f in logs)) from None
    assert {r["pid"] for r in rows}.isdisjoint(before.values())  # rank 0 on node-a restarted too
    assert all(r["restarts"] == 0 for r in status(path) if r["instance"] == "other")


def wait_failed(path: str) -> list[dict]:
    """The rows of instance `model` once they are all FAILED (its budget spent)."""
    def failed():
        rows = [r for r in status(path) if r["instance"] == "model"]
        return all(r["state"] == "FAILED" for r in rows) and rows
    return wait_for(failed, timeout=90, what="FAILED")


def test_a_rank_that_always_crashes_ends_failed_after_the_budget(deployment):
    path = deployment(crash=True, restart_max=2)
    run_cli("up", path)
    rows = wait_failed(path)
    assert rows[0]["restarts"] == 2
    assert "exit code 3" in rows[0]["reason"]
    table = run_cli("status", path)
    assert table.code == 1
    assert "model FAILED: rank program model-r" in table.out
    assert all(r["state"] == "RUNNING" for r in status(path) if r["instance"] == "other")


def test_failed_up_leaves_every_host_on_its_previous_generation(deployment, tmp_path):
    path = deployment()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="RUNNING")
    gen = status(path)[0]["generation"]
    before = pids(path, "model")
    # node-b's generations directory becomes unwritable: the upload fails there.
    gens_b = tmp_path / "deploy" / "itest" / "node-b" / "gens"
    path = deployment(model_env="c")
    with unwritable(gens_b):
        run = run_cli("up", path)
    assert run.code == 1
    assert "node-b" in run.err
    rows = status(path)
    assert {r["generation"] for r in rows} == {gen}
    assert pids(path, "model") == before


def test_down_leaves_no_process_and_no_socket(deployment, tmp_path):
    path = deployment()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="RUNNING")
    all_pids = [r["pid"] for r in status(path)]
    run = run_cli("down", path)
    assert run.code == 0, run.err
    for host in ("node-a", "node-b"):
        run_dir = tmp_path / "deploy" / "itest" / host / "run"
        assert list(run_dir.iterdir()) == []
    for pid in all_pids:
        wait_for(lambda: not _alive(pid), timeout=10, what=f"pid {pid} gone")
    assert all(r["state"] == "ABSENT" for r in status(path))


@contextlib.contextmanager
def unwritable(directory: Path):
    """chmod for a normal user; root ignores modes, so root makes the directory immutable."""
    if os.geteuid() != 0:
        os.chmod(directory, 0o500)
        try:
            yield
        finally:
            os.chmod(directory, 0o755)
        return
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a directory immutable here (chattr +i unsupported)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(out) and not out.startswith("Z")


def _hold(root: Path, **holder) -> Path:
    """A lock record as another operator's command left it on node-a (lock.py); its path."""
    lock = root / "itest" / "node-a" / "state" / "lock.json"
    lock.parent.mkdir(parents=True, exist_ok=True)
    here = {"boot": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
            "pidns": str(os.stat("/proc/self/ns/pid").st_ino),
            "start": Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]}
    base = {"id": "other", "user": "alice", "machine": socket.gethostname(), "pid": os.getpid(),
            "command": "up", "since": time.time(), **here}
    expires = holder.pop("expires", time.time() + 120)
    lock.write_text(json.dumps({"token": 5, "holder": {**base, **holder}, "expires": expires}))
    return lock


def _held(lock: Path) -> bool:
    return lock.exists() and bool(json.loads(lock.read_text()).get("holder"))


def test_a_second_operation_is_refused_naming_the_holder(deployment, tmp_path):
    path = deployment()
    root = (tmp_path / "deploy").resolve()
    lock = _hold(root)  # a live process on this machine (this test) holds it
    run = run_cli("up", path)
    assert run.code == 1
    assert f"deployment is busy: `up` by alice on {socket.gethostname()} (pid {os.getpid()}" in run.err
    assert all(r["state"] == "ABSENT" for r in status(path))  # nothing was started
    assert _held(lock)  # and the holder's lock is untouched
    lock.unlink()
    assert run_cli("up", path).code == 0
    assert not _held(lock)  # released after the up


def test_stale_locks_are_taken_over_with_a_warning(deployment, tmp_path):
    path = deployment()
    root = (tmp_path / "deploy").resolve()
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = _hold(root, pid=gone.pid)  # its process is gone
    run = run_cli("up", path)
    assert run.code == 0, run.err
    assert "warning: taking over a stale lock of `up` by alice" in run.err
    assert f"its process {gone.pid} on {socket.gethostname()} is gone" in run.err
    _hold(root, machine="elsewhere", expires=time.time() - 30)  # another machine, lease ran out
    run = run_cli("down", path)
    assert run.code == 0, run.err
    assert "its lease ran out" in run.err
    assert not _held(lock)


def test_diff_shows_what_up_would_change_and_touches_nothing(deployment):
    path = deployment()
    rows = json.loads(run_cli("diff", path, "--json").out)
    assert {(r["host"], r["owner"], r["change"]) for r in rows} == {
        (h, o, "add") for h in ("node-a", "node-b") for o in ("model", "other")}
    assert all(r["state"] == "ABSENT" for r in status(path))  # diff started nothing
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="RUNNING")
    before = pids(path, "model")
    path = deployment(model_env="changed")
    table = run_cli("diff", path)
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split()[:3] == ["HOST", "OWNER", "CHANGE"]
    assert sorted(ln.split()[2] for ln in lines[1:-1]) == ["none", "none", "restart", "restart"]
    assert lines[-1] == "2 changes; nothing was touched"
    assert pids(path, "model") == before


def _holder_of(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text()).get("holder")
    except (OSError, ValueError):
        return None


def _running_with(env: bytes) -> list[int]:
    """This user's processes whose environment has ``env`` (NAME=VALUE), as ps lists them."""
    out = []
    for pid in subprocess.run(["ps", "-U", str(os.getuid()), "-o", "pid="], capture_output=True,
                              text=True).stdout.split():
        try:
            if env + b"\0" in Path(f"/proc/{pid}/environ").read_bytes() and alive(int(pid)):
                out.append(int(pid))
        except OSError:
            continue
    return out


def test_an_up_whose_lease_was_broken_is_refused_and_changes_nothing(deployment, tmp_path):
    """Two `up`s after a broken lease: the first one, stalled (SIGSTOP) while it held the lock
    until its lease ran out, is taken over by the second; resumed, every host refuses its
    fencing token: it exits 1 saying so, and nothing of its generation is switched or started."""
    first = deployment()
    assert run_cli("up", first).code == 0
    wait_for(lambda: all_running(first), what="all ranks RUNNING")
    roots = (tmp_path / "deploy").resolve() / "itest"
    lock = roots / "node-a" / "state" / "lock.json"
    stalled_topo, second_topo = tmp_path / "stalled.yaml", tmp_path / "second.yaml"
    stalled_topo.write_text(Path(first).read_text().replace('MODEL_VERSION: "a"', 'MODEL_VERSION: "stalled"'))
    second_topo.write_text(Path(first).read_text().replace('MODEL_VERSION: "a"', 'MODEL_VERSION: "second"'))
    stalled = subprocess.Popen([sys.executable, "-m", "launcher", "up", str(stalled_topo)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (_holder_of(lock) or {}).get("pid") == stalled.pid, timeout=60,
                 what="the first up holding the lock")
        os.kill(stalled.pid, signal.SIGSTOP)
        # what 120 s of its silence would leave: the lease ran out (on the lock host's clock)
        lock.write_text(json.dumps({**json.loads(lock.read_text()), "expires": time.time() - 1}))
        second = run_cli("up", str(second_topo))
        assert second.code == 0, second.err
        assert "taking over a stale lock of `up`" in second.err and "its lease ran out" in second.err, second.err
        wait_for(lambda: all_running(str(second_topo)), what="the second up's ranks RUNNING")
        rows = status(str(second_topo))
        generation = rows[0]["generation"]
        before = {(r["instance"], r["rank"]): r["pid"] for r in rows}
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
        out, err = stalled.communicate(timeout=300)
    assert stalled.returncode == 1, (out, err)
    assert "error: stopped: this command lost the deployment lock on node-a" in err, err
    assert "which the hosts now refuse, so it changed nothing after that" in err, err
    for host in ("node-a", "node-b"):  # nothing of it switched ...
        assert os.readlink(roots / host / "current") == f"gens/{generation}"
    rows = status(str(second_topo))
    assert {(r["instance"], r["rank"]): r["pid"] for r in rows} == before  # ... nor restarted
    assert all(r["state"] == "RUNNING" and r["generation"] == generation for r in rows)
    assert _running_with(b"MODEL_VERSION=stalled") == []  # ... nor started (ps)
    assert len(_running_with(b"MODEL_VERSION=second")) >= 2
    assert _holder_of(lock) is None  # and the second up's lock was left alone


def test_a_truncated_generation_on_a_host_is_uploaded_again_not_trusted(deployment, tmp_path):
    first = deployment()
    assert run_cli("up", first).code == 0
    generation = status(first)[0]["generation"]
    assert run_cli("up", deployment(model_env="b")).code == 0  # gens/<first> stays on the hosts
    script = next(((tmp_path / "deploy").resolve() / "itest" / "node-b" / "gens" / generation / "bin").iterdir())
    whole = script.read_bytes()
    with open(script, "r+b") as fh:  # what a power loss can leave of a file written before its rename
        fh.truncate(len(whole) // 3)
    assert deployment() == first
    again = run_cli("up", first)
    assert again.code == 0, again.err
    assert script.read_bytes() == whole  # uploaded again
    wait_for(lambda: all_running(first), what="all ranks RUNNING on the repaired generation")
    assert {r["generation"] for r in status(first)} == {generation}
