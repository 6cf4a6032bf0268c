"""Readiness is part of state, on the testbed: a service that runs but does not answer its probe,
and one that cannot start at all.

h1 runs `serve` (Python's http.server) with an HTTP probe. SIGSTOP makes it hang as a wedged
server does: supervisord still has it RUNNING, `ps` shows it stopped, `ss` its port still
listening, and nothing answers. `status` must say it is not ready (and exit 1); an `up` that
leaves it running unchanged must check its probe, say so and leave it running. h2 gets a
service whose binary is not executable: `up` must fail at once, not after its ready timeout,
with the program's own last lines.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT, cli_on_testbed as cli, host_entry, run_cli, ssh_flags, topology_head, wait_for

TESTBED_HOSTS = 2
PORT = 18791
BROKEN_PORT = 18792
NOT_EXECUTABLE = "/tmp/readiness-not-executable"


def topology(tb) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    return f"""\
{topology_head("ready")}hosts:
{hosts}services:
  - name: serve
    kind: generic
    hosts: [{tb.hosts[0].name}]
    command: [python3, -m, http.server, "{PORT}", --bind, {tb.hosts[0].address}]
    ports: [{PORT}]
    probe: {{http: ":{PORT}/", timeout: 1, period: 0.2}}
"""


def broken_topology(tb) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    return f"""\
{topology_head("broken")}hosts:
{hosts}services:
  - name: broken
    kind: generic
    hosts: [{tb.hosts[1].name}]
    command: [{NOT_EXECUTABLE}, --port, "{BROKEN_PORT}"]
    ports: [{BROKEN_PORT}]
    probe: {{tcp: "{BROKEN_PORT}", timeout: 1, period: 0.2}}
"""


def status(tb, path: str) -> tuple[int, dict[str, dict]]:
    run = cli(tb, "status", path, "--json")
    return run.code, {r["instance"]: r for r in json.loads(run.out)}


def ps_stat(pid: int) -> str:
    """`ps`'s STAT of a process ('' when there is none): T is stopped (SIGSTOP)."""
    proc = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return proc.stdout.strip()


def listening(tb, host, port: int) -> str:
    """`ss` inside the host's network namespace: the listening socket on ``port``, with its process."""
    return tb.run(host, ["ss", "-ltnpH", f"sport = :{port}"]).stdout.strip()


@pytest.fixture
def deployed(testbed, tmp_path):
    path = tmp_path / "ready.yaml"
    path.write_text(topology(testbed))
    run = cli(testbed, "up", str(path))
    assert run.code == 0, run.err
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def test_a_hung_service_is_not_ready_in_status_and_up_checks_it_and_leaves_it_running(testbed, deployed):
    h1 = testbed.hosts[0]
    code, rows = status(testbed, deployed)
    assert code == 0 and rows["serve"]["state"] == "RUNNING" and rows["serve"]["ready"] is True, rows
    pid = rows["serve"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # wedged: alive, its port open, no answer
    try:
        code, rows = status(testbed, deployed)
        serve = rows["serve"]
        assert code == 1, rows
        assert serve["state"] == "RUNNING" and serve["pid"] == pid and serve["ready"] is False, serve
        assert f"http http://{h1.address}:{PORT}/: " in serve["probe_error"], serve
        table = cli(testbed, "status", deployed)
        assert table.code == 1
        assert f"RUNNING (not ready: http http://{h1.address}:{PORT}/: " in table.out, table.out
        # what the host says: the process is there, stopped, and still holds its port
        assert ps_stat(pid).startswith("T"), ps_stat(pid)
        assert f"pid={pid}," in listening(testbed, h1, PORT), listening(testbed, h1, PORT)
        # nothing changed in the topology: up leaves serve running, and checks its probe
        run = cli(testbed, "up", deployed, "--ready-timeout", "2")
        assert run.code == 1, run.err
        assert "unchanged, left running: serve" in run.err
        assert "serve was left running (unchanged) but does not answer its probe" in run.err, run.err
        assert "`launcher restart --instance serve` restarts it" in run.err
        assert ps_stat(pid).startswith("T")  # not restarted: the same process, still there
        # --json: the failure as a JSON object on stdout, with the exit code
        run = cli(testbed, "up", deployed, "--ready-timeout", "1", "--json")
        doc = json.loads(run.out)
        assert run.code == 1 and doc["ok"] is False and doc["exit"] == 1, run.out
        assert "serve was left running (unchanged) but does not answer its probe" in doc["error"]
    finally:
        os.kill(pid, signal.SIGCONT)
    code, rows = wait_for(lambda: (s := status(testbed, deployed))[0] == 0 and s, what="serve ready again")
    assert rows["serve"]["ready"] is True and rows["serve"]["pid"] == pid
    run = cli(testbed, "up", deployed)
    assert run.code == 0, run.err
    assert "serve (left running) is" not in run.err  # one round of probes passed: nothing more to say
    # restart --json answers in JSON; ps and ss show the new process, not the old one
    run = cli(testbed, "restart", deployed, "--instance", "serve", "--json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["ok"] is True and doc["restarted"] == ["serve"] and doc["skew_seconds"] >= 0, doc
    assert ps_stat(pid) == ""
    code, rows = wait_for(lambda: (s := status(testbed, deployed))[0] == 0 and s, what="serve ready after restart")
    assert rows["serve"]["pid"] != pid
    assert f"pid={rows['serve']['pid']}," in listening(testbed, h1, PORT)


def test_a_service_that_cannot_start_fails_up_at_once_with_its_own_last_lines(testbed, tmp_path):
    h2 = testbed.hosts[1]
    binary = h2.path(NOT_EXECUTABLE)
    binary.write_text("#!/bin/sh\nexec sleep 600\n")
    os.chmod(binary, 0o644)  # not executable
    path = tmp_path / "broken.yaml"
    path.write_text(broken_topology(testbed))
    try:
        # a ready timeout far beyond the test's own bound: only a wait that ends at the exit returns in time
        proc = subprocess.run([sys.executable, "-m", "launcher", "up", str(path), "--ready-timeout", "3600",
                               *ssh_flags(testbed)], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stderr
        assert "broken was started but did not become ready" in proc.stderr, proc.stderr
        assert "before it was ready" in proc.stderr and "Permission denied" in proc.stderr, proc.stderr
        assert NOT_EXECUTABLE in proc.stderr
        # the agent spends its restart budget and gives up: FAILED, with the same lines
        failed = wait_for(lambda: (r := status(testbed, str(path))[1]["broken"])["state"] == "FAILED" and r,
                          what="broken FAILED")
        assert any("Permission denied" in ln for ln in failed["last_log"]), failed
        assert listening(testbed, h2, BROKEN_PORT) == ""
        mine = subprocess.run(["pgrep", "-f", NOT_EXECUTABLE], capture_output=True, text=True).stdout.split()
        assert mine == [], mine
    finally:
        run_cli("down", str(path), "--purge", *ssh_flags(testbed))
        binary.unlink()
