"""supervisord's own faults on the testbed: killed (kill -9, as the OOM killer does) while ranks run.

Watched from outside as well as through `launcher status`: the testbed shares the pid
namespace, so rank pids are real pids here, and `ss -ltnp` inside a host names who holds a port.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.helpers import health_json as health
from tests.helpers import cli_on_testbed as cli, ssh_flags, host_entry, live_pids, run_cli, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 2
HEALTH = 18710


def topology(tb: Testbed) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    names = ", ".join(h.name for h in tb.hosts)
    return (topology_head("faults", extra_defaults="  restart: {max: 3, window: 600}\n")
            + f"hosts:\n{hosts}instances:\n  - name: demo\n    hosts: [{names}]\n    devices: [0]\n"
            f"    command: [launcher-demo-rank, --health-port, \"{HEALTH}\", --barrier-timeout, \"60\"]\n")


@pytest.fixture
def deployed(testbed: Testbed, tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(topology(testbed))
    run = cli(testbed, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: all_healthy(testbed), what="both ranks past their barrier")
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))



def status(tb: Testbed, path: str) -> tuple[int, list[dict]]:
    run = cli(tb, "status", path, "--json")
    return run.code, json.loads(run.out)


def all_healthy(tb: Testbed) -> dict[str, dict] | None:
    docs = {h.name: health(h.address, HEALTH) for h in tb.hosts}
    return docs if all(docs.values()) else None


def root(tb: Testbed, host) -> str:
    return f"/srv/launcher/faults/{host.name}"


def read_pid(tb: Testbed, host, rel: str) -> int:
    out = tb.run(host, ["cat", f"{root(tb, host)}/{rel}"])
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().strip('"'))


def rank_pids(tb: Testbed, host) -> list[int]:
    """Every process on the testbed that is a demo rank of `host` (by its environment: ps
    cannot tell hosts apart in the shared pid namespace)."""
    marker = f"SUPERVISOR_SERVER_URL=unix://{root(tb, host)}/run/supervisor.sock".encode()
    return live_pids(lambda cmd, env: marker in env.split(b"\0") and b"launcher.host.demo_rank" in cmd)


def port_holders(tb: Testbed, host, port: int) -> set[int]:
    out = tb.run(host, ["ss", "-Hltnp", f"sport = :{port}"])
    return {int(p) for p in re.findall(r"pid=(\d+)", out.stdout)}


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def test_dead_supervisord_orphans_are_seen_and_up_leaves_one_copy(testbed: Testbed, deployed: str):
    victim = testbed.hosts[1]
    code, rows = status(testbed, deployed)
    assert code == 0, rows
    before = {r["host"]: r["pid"] for r in rows}
    orphan = before[victim.name]
    assert rank_pids(testbed, victim) == [orphan]

    # the agent dies with its supervisord (held still first, or it would recover on its own)
    agent = read_pid(testbed, victim, "state/agent.pid")
    supervisord = read_pid(testbed, victim, "run/supervisord.pid")
    os.kill(agent, signal.SIGSTOP)
    os.kill(supervisord, signal.SIGKILL)
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: gone(supervisord) and gone(agent), what="supervisord and the agent gone")
    assert not gone(orphan)

    code, rows = status(testbed, deployed)
    assert code == 1
    row = next(r for r in rows if r["host"] == victim.name)
    assert row["state"] == "ORPHANED", row
    assert row["pid"] == orphan and orphan in row["orphan_pids"], row
    assert any("supervisord is down" in d for d in row["drift"]), row
    text = cli(testbed, "status", deployed)
    assert "ORPHANED (supervisord down)" in text.out and str(orphan) in text.out, text.out

    # up: the orphan is stopped before a supervisord starts; the whole gang starts again
    run = cli(testbed, "up", deployed)
    assert run.code == 0, run.err
    assert f"{victim.name}: stopped what a dead supervisord left running: demo-r1 (pid {orphan})" in run.err
    assert gone(orphan)
    docs = wait_for(lambda: all_healthy(testbed), what="both ranks past a new barrier")
    code, rows = status(testbed, deployed)
    assert code == 0, rows
    after = {r["host"]: r["pid"] for r in rows}
    assert all(after[h] != before[h] for h in before), (before, after)  # both hosts: a whole gang
    for h in testbed.hosts:
        assert rank_pids(testbed, h) == [after[h.name]]
        assert port_holders(testbed, h, HEALTH) == {after[h.name]}
        assert docs[h.name]["pid"] == after[h.name]


def one_copy_each(tb: Testbed, pids: dict[str, int]) -> None:
    """Exactly one rank process per host, the one status names, and it holds the health port."""
    for h in tb.hosts:
        assert rank_pids(tb, h) == [pids[h.name]]
        assert port_holders(tb, h, HEALTH) == {pids[h.name]}


def unread(pid: int, fd: int) -> int:
    """Bytes waiting in the pipe a process has as ``fd`` (FIONREAD on it, reopened through /proc)."""
    with open(f"/proc/{pid}/fd/{fd}", "rb", buffering=0) as fh:
        return struct.unpack("i", fcntl.ioctl(fh.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def kill_while_the_agent_handles_an_event(tb: Testbed, host, supervisord: int) -> None:
    """kill -9 of supervisord after it sent the agent an event (this one, or one queued before it)
    and before the agent answered it: the agent (held still meanwhile) then finds the pipe it
    answers on broken (EPIPE), not EOF."""
    agent = read_pid(tb, host, "state/agent.pid")
    os.kill(agent, signal.SIGSTOP)
    try:
        wake = ("import sys; from launcher.host.supervisor_rpc import rpc; "
                "rpc(sys.argv[1]).supervisor.sendRemoteCommEvent('test', 'an event to answer')")
        run = tb.run(host, ["env", f"PYTHONPATH={root(tb, host)}/runtime/current/site.zip", "python3", "-c", wake,
                            root(tb, host)])
        assert run.returncode == 0, run.stderr
        # in the pipe within a second or so (supervisord's loop), unless the agent was held while
        # answering an earlier event: then supervisord keeps this one, and the agent's answer to
        # that one meets the broken pipe instead; either way it is mid-event
        deadline = time.monotonic() + 5
        while unread(agent, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(supervisord, signal.SIGKILL)
        wait_for(lambda: gone(supervisord), what="supervisord gone")
    finally:
        os.kill(agent, signal.SIGCONT)


@pytest.mark.parametrize("victim_index,mid_event", [(1, False), (0, False), (1, True)],
                         ids=["member", "leader", "member-mid-event"])
def test_killed_supervisord_comes_back_and_its_gang_restarts_whole(testbed: Testbed, deployed: str,
                                                                   victim_index: int, mid_event: bool):
    victim = testbed.hosts[victim_index]
    _, rows = status(testbed, deployed)
    before = {r["host"]: r["pid"] for r in rows}
    supervisord = read_pid(testbed, victim, "run/supervisord.pid")
    agent = read_pid(testbed, victim, "state/agent.pid")
    if mid_event:
        kill_while_the_agent_handles_an_event(testbed, victim, supervisord)
    else:
        os.kill(supervisord, signal.SIGKILL)  # the agent lives on: it is what recovers

    def recovered():
        code, rows = status(testbed, deployed)
        now = {r["host"]: r["pid"] for r in rows}
        return code == 0 and all(now[h] != before[h] for h in before) and all_healthy(testbed) and now
    try:
        after = wait_for(recovered, timeout=240, what="supervisord back and the whole gang restarted")
    except AssertionError as err:
        log = testbed.run(victim, ["tail", "-n", "30", f"{root(testbed, victim)}/logs/launcher-agent.log"]).stdout
        ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:32,args", "-p", str(agent)], capture_output=True,
                            text=True).stdout
        raise AssertionError(f"{err}\n{victim.name}'s agent log:\n{log}\nits agent (pid {agent}):\n{ps}") from None
    assert gone(before[victim.name])
    assert read_pid(testbed, victim, "run/supervisord.pid") != supervisord
    one_copy_each(testbed, after)
    log = testbed.run(victim, ["cat", f"{root(testbed, victim)}/logs/launcher-agent.log"]).stdout
    assert f"supervisord (pid {supervisord}) died; stopped 1 of its processes" in log, log
    if mid_event:  # the agent saw it go as it answered an event (EPIPE), not as it waited (EOF)
        assert "supervisord went away (it stopped reading the event pipe)" in log, log


def test_status_never_says_running_for_a_host_whose_processes_all_died(testbed: Testbed, deployed: str):
    victim = testbed.hosts[1]
    code, rows = status(testbed, deployed)
    row = next(r for r in rows if r["host"] == victim.name)
    # uptime is the process's, not the one frozen in the agent's last snapshot
    def snapshot_uptime() -> float:
        snap = json.loads(testbed.run(victim, ["cat", f"{root(testbed, victim)}/state/snapshot.json"]).stdout)
        return next(p["uptime"] for p in snap["programs"] if p["name"] == row["program"])

    def live_uptime() -> float:
        return next(r for r in status(testbed, deployed)[1] if r["host"] == victim.name)["uptime"]
    wait_for(lambda: live_uptime() > snapshot_uptime() + 2, what="status uptime past the snapshot's")
    rank = row["pid"]
    agent = read_pid(testbed, victim, "state/agent.pid")
    supervisord = read_pid(testbed, victim, "run/supervisord.pid")
    for pid in (supervisord, agent):  # held still, so nothing reacts to the others dying
        os.kill(pid, signal.SIGSTOP)
    for pid in (rank, agent, supervisord):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(gone(p) for p in (rank, agent, supervisord)), what="every process of the host gone")
    code, rows = status(testbed, deployed)
    row = next(r for r in rows if r["host"] == victim.name)
    assert code == 1 and row["state"] != "RUNNING", row
    assert row["state"] == "ABSENT" and row["pid"] is None, row


def test_down_stops_what_a_dead_supervisord_left(testbed: Testbed, deployed: str):
    victim = testbed.hosts[1]
    _, rows = status(testbed, deployed)
    orphan = next(r["pid"] for r in rows if r["host"] == victim.name)
    agent = read_pid(testbed, victim, "state/agent.pid")
    supervisord = read_pid(testbed, victim, "run/supervisord.pid")
    os.kill(agent, signal.SIGSTOP)
    os.kill(supervisord, signal.SIGKILL)
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: gone(supervisord) and gone(agent), what="supervisord and the agent gone")
    run = cli(testbed, "down", deployed)
    assert run.code == 0, run.err
    assert gone(orphan)
    assert rank_pids(testbed, victim) == [] and port_holders(testbed, victim, HEALTH) == set()
