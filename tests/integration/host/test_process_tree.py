"""A program is its whole process tree (launcher/host/proctree.py): local transport, real supervisord
and agent, and a program (listeners.py) whose two listeners ignore SIGTERM, one in a session of its
own. Whatever stops or restarts it, or kills its parent -9, exactly one tree runs afterwards, its
ports held by the new listeners; `down` leaves no process of the deployment."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import run_cli, wait_for
from tests.integration.deploy.test_local_deploy import status

HERE = Path(__file__).resolve().parent
AGENT = b"launcher-agent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def forker(tmp_path):
    """A deployment of one host (node-a) with instance `forker`: listeners.py on two free ports."""
    deploy = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))  # short: supervisord's socket is under it
    ports = (free_port(), free_port())
    path = tmp_path / "topo.yaml"
    path.write_text(f"""\
version: 1
name: ptree
defaults:
  deploy_dir: {deploy}
  agent_port: {free_port()}
  restart: {{max: 3, window: 600}}
  preflight: false
hosts:
  - name: node-a
    address: 127.0.0.1
    transport: local
    devices: {{0: 10.213.200.1}}
instances:
  - name: forker
    hosts: [node-a]
    devices: [0]
    command: [{sys.executable}, {HERE / "listeners.py"}, "{ports[0]}", "{ports[1]}"]
""")
    yield str(path), (deploy / "ptree" / "node-a").resolve(), ports
    run_cli("down", str(path), "--purge")
    shutil.rmtree(deploy, ignore_errors=True)


def marked(root: Path) -> dict[int, bytes]:
    """Live processes carrying ROOT's supervisord marker: pid -> SUPERVISOR_PROCESS_NAME."""
    marker = f"SUPERVISOR_SERVER_URL=unix://{root}/run/supervisor.sock".encode()
    out = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{d}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in env and state not in (b"Z", b"X"):
            name = next((e.split(b"=", 1)[1] for e in env if e.startswith(b"SUPERVISOR_PROCESS_NAME=")), b"")
            out[int(d)] = name
    return out


def listeners(port: int) -> list[int]:
    """The inodes of the LISTEN sockets on 127.0.0.1:PORT (/proc/net/tcp, what `ss -ltn` reads)."""
    want = f"0100007F:{port:04X}"
    inodes = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":  # 0A: TCP_LISTEN
            inodes.append(int(f[9]))
    return inodes


def holders(inode: int, pids) -> list[int]:
    """Which of ``pids`` hold socket ``inode`` open (`ss -p` reads the same links)."""
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    out.append(pid)
                    break
            except OSError:
                pass
    return out


def one_tree(root: Path, ports: tuple[int, int]) -> dict | None:
    """{"pids", "parent", "listeners"} when exactly one tree of `forker` runs: its program and
    two listeners, each port listened on once, by one of them; else None."""
    procs = {pid for pid, name in marked(root).items() if name != AGENT}
    if len(procs) != 3:
        return None
    owners = []
    for port in ports:
        inodes = listeners(port)
        if len(inodes) != 1:
            return None
        held = holders(inodes[0], procs)
        if len(held) != 1:
            return None
        owners.append(held[0])
    if len(set(owners)) != 2:
        return None
    parent = (procs - set(owners)).pop()
    return {"pids": procs, "parent": parent, "listeners": owners}


def restarted_once(path: str) -> bool:
    rows = status(path)
    return bool(rows) and all(r["state"] == "RUNNING" and r["restarts"] == 1 for r in rows)


def down_leaves_nothing(path: str, root: Path) -> None:
    run = run_cli("down", path)
    assert run.code == 0, run.err
    assert marked(root) == {}  # no process of the deployment: supervisord's own marker is gone too


@pytest.mark.parametrize("finder", ["subreaper", "scan"])
def test_kill_9_of_the_parent_the_agent_restarts_one_tree(forker, finder):
    """``scan``: as with a supervisord an older runtime started (no run/subreaper naming it), the
    leftovers are found by a scan of /proc for the marker."""
    path, root, ports = forker
    run = run_cli("up", path)
    assert run.code == 0, run.err
    old = wait_for(lambda: one_tree(root, ports), what="the program and its two listeners")
    assert (root / "run" / "subreaper").read_text().strip() == (root / "run" / "supervisord.pid").read_text().strip()
    if finder == "scan":
        (root / "run" / "subreaper").unlink()
    os.kill(old["parent"], signal.SIGKILL)  # its listeners live on, holding the ports
    new = wait_for(lambda: (t := one_tree(root, ports)) and not t["pids"] & old["pids"] and t,
                   what="one new tree holding both ports")
    assert set(new["listeners"]).isdisjoint(old["listeners"])
    wait_for(lambda: restarted_once(path), what="forker RUNNING after one restart (budget not spent)")
    assert one_tree(root, ports)["pids"] == new["pids"]
    log = (root / "logs" / "launcher-agent.log").read_text()
    assert "stopped what outlived its program" in log and str(old["listeners"][0]) in log
    down_leaves_nothing(path, root)


def test_a_restart_by_the_cli_stops_what_left_the_process_group(forker):
    """`restart`: supervisord's stop ends the program (SIGTERM to its group); the listener in its
    own session never got it, and the one in the group ignored it: the host action stops both."""
    path, root, ports = forker
    run = run_cli("up", path)
    assert run.code == 0, run.err
    old = wait_for(lambda: one_tree(root, ports), what="the program and its two listeners")
    run = run_cli("restart", path, "--instance", "forker")
    assert run.code == 0, run.err
    new = wait_for(lambda: (t := one_tree(root, ports)) and not t["pids"] & old["pids"] and t,
                   what="one new tree holding both ports")
    assert set(new["listeners"]).isdisjoint(old["listeners"])
    rows = status(path)
    assert all(r["state"] == "RUNNING" for r in rows), rows
    down_leaves_nothing(path, root)
