"""Rolling restart on real supervisord (local transport): one instance at a time, each ready
(its HTTP probe answers) before the next; a roll stops at an instance that never gets ready."""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.helpers import run_cli, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topology(deploy: Path, agent_port: int, probe_b: int = 18720) -> str:
    insts = "".join(
        f"  - name: {n}\n    hosts: [solo]\n    devices: [{d}]\n    rendezvous_port: {29700 + d}\n"
        f"    command: [launcher-demo-rank, --health-port, '{port}']\n"
        f"    probe: {{http: ':{probe}/health', timeout: 2, period: 0.2}}\n"
        for n, d, port, probe in (("a", 0, 18710, 18710), ("b", 1, 18720, probe_b), ("c", 2, 18730, 18730)))
    return f"""\
version: 1
name: roll
defaults: {{deploy_dir: {deploy}, preflight: false, agent_port: {agent_port}}}
hosts:
  - name: solo
    address: 127.0.0.1
    transport: local
    devices: {{0: 10.213.240.1, 1: 10.213.240.2, 2: 10.213.240.3}}
instances:
{insts}"""


@pytest.fixture
def roll(tmp_path):
    deploy = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))
    port = free_port()
    path = tmp_path / "topo.yaml"

    def write(**kw) -> str:
        path.write_text(topology(deploy, port, **kw))
        return str(path)
    yield write
    run_cli("down", str(path), "--purge")
    shutil.rmtree(deploy, ignore_errors=True)


def rows(path: str) -> dict[str, dict]:
    return {r["instance"]: r for r in json.loads(run_cli("status", path, "--json").out)}


def test_rolling_restart_one_at_a_time_each_ready(roll):
    path = roll()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all(r["state"] == "RUNNING" for r in rows(path).values()), what="RUNNING")
    before = {k: r["pid"] for k, r in rows(path).items()}
    run = run_cli("restart", path, "--rolling", "--max-unavailable", "1", "--json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["restarted"] == ["a", "b", "c"] and doc["failed"] is None
    after = rows(path)
    assert all(after[k]["pid"] != before[k] for k in before)
    # one at a time: a had been up longest when the roll ended, c the shortest
    assert after["a"]["uptime"] >= after["b"]["uptime"] >= after["c"]["uptime"]
    assert "a ready after" in run.err and "c ready after" in run.err


def test_roll_stops_at_an_instance_that_never_gets_ready(roll):
    path = roll()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all(r["state"] == "RUNNING" for r in rows(path).values()), what="RUNNING")
    path = roll(probe_b=18799)  # b's probe asks a port nobody serves
    before = {k: r["pid"] for k, r in rows(path).items()}
    run = run_cli("restart", path, "--rolling", "--ready-timeout", "3")
    assert run.code == 1
    assert run.out.startswith("rolling restart stopped: b did not become ready")
    assert "untouched: c" in run.out
    after = rows(path)
    assert after["a"]["pid"] != before["a"] and after["c"]["pid"] == before["c"]


def test_up_starts_dependents_only_when_their_dependency_is_ready(roll, tmp_path):
    path = Path(roll())
    text = path.read_text()
    # b depends on a; a's probe never passes: b must not start, and up says why
    text = text.replace("  - name: b\n", "  - name: b\n    depends_on: [a]\n").replace(
        "probe: {http: ':18710/health'", "probe: {http: ':18798/health'")
    path.write_text(text.replace("timeout: 2, period: 0.2", "timeout: 1, period: 0.2"))
    run = run_cli("up", str(path), "--ready-timeout", "4")
    assert run.code == 1
    assert "error: a did not become ready (solo: http http://127.0.0.1:18798/health:" in run.err
    assert "not started, as they wait for it: b" in run.err
    states = rows(str(path))
    assert states["b"]["state"] != "RUNNING" and states["a"]["state"] == "RUNNING"
