"""The agent core on the testbed (issue 23): a restart resumed by the next agent, an agent whose
supervisord died giving up its port, messages bound to their recipient and refused when replayed
after an agent restart, and 500 silent clients on the agent port.

3 hosts; instance `demo` spans h1 (its leader) and h2 and depends on `other` (h3, an http probe),
so a gang restart of demo waits while h3 is cut off: the restart window of these tests.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import alive, cli_on_testbed as cli, live_pids, run_cli, ssh_flags, wait_for

TESTBED_HOSTS = 3
HEALTH = 18720
AGENT_PORT = 29390
NAME = "core"


def topology(tb) -> str:
    hosts = "".join(helpers.host_entry(tb, h, f"{{0: 10.97.{i}.1}}") for i, h in enumerate(tb.hosts))
    h1, h2, h3 = (h.name for h in tb.hosts)
    return f"""\
version: 1
name: {NAME}
defaults:
  deploy_dir: /srv/launcher
  restart: {{max: 5, window: 600}}
  preflight: false
hosts:
{hosts}instances:
  - name: other
    hosts: [{h3}]
    devices: [0]
    command: [launcher-demo-rank, --health-port, "{HEALTH}"]
    probe: {{http: ":{HEALTH}/health", timeout: 2}}
  - name: demo
    hosts: [{h1}, {h2}]
    devices: [0]
    depends_on: [other]
    command: [launcher-demo-rank, --health-port, "{HEALTH}", --barrier-timeout, "120"]
"""


@pytest.fixture
def deployed(testbed, tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(topology(testbed))
    run = cli(testbed, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: demo_health(testbed), what="both demo ranks past their barrier")
    yield str(path)
    for h in testbed.hosts:
        testbed.restore(h.name)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def root(tb, host) -> Path:
    h = tb.host(host)
    return Path(h.path(f"/srv/launcher/{NAME}/{h.name}"))


def agent_log(tb, host) -> str:
    return (root(tb, host) / "logs" / "launcher-agent.log").read_text(errors="replace")


def agent_pid(tb, host) -> int:
    return int((root(tb, host) / "state" / "agent.pid").read_text())


def demo_health(tb) -> dict[str, dict] | None:
    return helpers.demo_health(tb, HEALTH, hosts=2)


def restarted_after(tb, before: dict[str, dict]):
    now = demo_health(tb)
    return now if now and all(now[h]["barrier_passed_at"] > before[h]["barrier_passed_at"]
                              and now[h]["pid"] != before[h]["pid"] for h in before) else None


def rank_pids(tb, host, program: str) -> list[int]:
    """The processes of one rank program on one host (ps: the hosts share one pid namespace)."""
    url = f"SUPERVISOR_SERVER_URL=unix:///srv/launcher/{NAME}/{tb.host(host).name}/run/supervisor.sock".encode()
    name = f"SUPERVISOR_PROCESS_NAME={program}".encode()
    return live_pids(lambda cmd, env: b"launcher.host.demo_rank" in cmd and url in env.split(b"\0")
                     and name in env.split(b"\0"))


def listener_pids(tb, host) -> set[int]:
    """Pids listening on the agent port on that host (ss)."""
    out = tb.run(host, ["ss", "-ltnpH", f"sport = :{AGENT_PORT}"], check=True).stdout
    return {int(p.split("=")[1]) for p in out.replace(",", " ").split() if p.startswith("pid=")}


def rows(tb, path: str) -> list[dict]:
    return json.loads(cli(tb, "status", path, "--json").out)


def ask(address: str, line: bytes) -> dict:
    """Send one raw line to an agent; its reply's body (signed: the test holds the key)."""
    with socket.create_connection((address, AGENT_PORT), timeout=10) as s:
        s.sendall(line)
        return json.loads(json.loads(s.makefile("rb").readline())["body"])


def key_of(tb) -> bytes:
    return (root(tb, tb.hosts[0]) / "state" / "secret").read_bytes().strip()


def assert_gang_whole(tb) -> None:
    """One process per rank on each host (ps), and its port bound by it (ss)."""
    h1, h2 = tb.hosts[0], tb.hosts[1]
    for h, program in ((h1, "demo-r0"), (h2, "demo-r1")):
        pids = rank_pids(tb, h, program)
        assert len(pids) == 1, (h.name, program, pids)
        out = tb.run(h, ["ss", "-ltnpH", f"sport = :{HEALTH}"], check=True).stdout
        assert f"pid={pids[0]}," in out, out


def test_an_agent_killed_in_the_restart_window_is_replaced_by_one_that_finishes_the_restart(testbed, deployed):
    h1, h2, h3 = testbed.hosts
    before = demo_health(testbed)
    testbed.isolate(h3.name)  # `other` cannot answer: demo's restart waits for it (the window)
    try:
        os.kill(int(before[h1.name]["pid"]), 9)
        wait_for(lambda: "waits for other before it starts again" in agent_log(testbed, h1), timeout=120,
                 what="the leader stopping demo and waiting for other")
        assert rank_pids(testbed, h2, "demo-r1") == []  # stopped on every host, the restart's intent on disk
        assert "intent" in json.loads((root(testbed, h1) / "state" / "gang.json").read_text())["demo"]
        old = agent_pid(testbed, h1)
        os.kill(old, 9)
        wait_for(lambda: not alive(old) and agent_pid(testbed, h1) != old and alive(agent_pid(testbed, h1)),
                 what="a new agent on h1")
        wait_for(lambda: "a restart its previous agent began is resumed" in agent_log(testbed, h1),
                 what="the new agent resuming the restart")
    finally:
        testbed.restore(h3.name)
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180,
                     what="demo restarted on both hosts by the new agent")
    assert all(alive(int(after[h]["pid"])) for h in after)
    assert_gang_whole(testbed)
    record = json.loads((root(testbed, h1) / "state" / "gang.json").read_text())["demo"]
    assert record["state"] == "RUNNING" and record["restarts"] == 1 and "intent" not in record


def test_an_agent_whose_supervisord_died_exits_and_its_successor_takes_the_port(testbed, deployed):
    h1, h2, h3 = testbed.hosts
    before = demo_health(testbed)
    testbed.isolate(h3.name)  # a gang work thread of the agent waits (for `other`) when supervisord dies
    try:
        os.kill(int(before[h1.name]["pid"]), 9)
        wait_for(lambda: "waits for other before it starts again" in agent_log(testbed, h1), timeout=120,
                 what="the leader waiting for other")
        old = agent_pid(testbed, h1)
        assert listener_pids(testbed, h1) == {old}
        supervisord = int((root(testbed, h1) / "run" / "supervisord.pid").read_text())
        os.kill(supervisord, 9)
        wait_for(lambda: not alive(old), what="the old agent gone (before: kept alive by its waiting thread)")
        wait_for(lambda: agent_pid(testbed, h1) != old and listener_pids(testbed, h1) == {agent_pid(testbed, h1)},
                 what="the new agent listening on the agent port")
    finally:
        testbed.restore(h3.name)
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180, what="demo back on both hosts")
    assert all(alive(int(after[h]["pid"])) for h in after)
    assert_gang_whole(testbed)


def test_a_stop_for_h1_sent_to_h2_is_refused_and_a_replay_after_an_agent_restart_too(testbed, deployed):
    from launcher.host.messages import sign
    h1, h2, _ = testbed.hosts
    key = key_of(testbed)
    running = rank_pids(testbed, h2, "demo-r1")
    captured = sign(key, {"op": "stop", "group": "demo"}, sender=h2.name, to=h1.name, deployment=NAME)
    reply = ask(h2.address, captured)  # every host holds the key: only the recipient's name stops it
    assert reply["ok"] is False
    assert reply["error"] == f"refused: sent to '{h1.name}' by '{h2.name}', not to this host ({h2.name})"
    assert reply["from"] == h2.name
    assert rank_pids(testbed, h2, "demo-r1") == running  # still running, the same process
    ping = sign(key, {"op": "ping"}, sender=h1.name, to=h2.name, deployment=NAME)
    assert ask(h2.address, ping)["ok"] is True
    old = agent_pid(testbed, h2)
    os.kill(old, 9)  # supervisord starts another agent: its replay cache is on disk
    wait_for(lambda: agent_pid(testbed, h2) != old and listener_pids(testbed, h2) == {agent_pid(testbed, h2)},
             what="a new agent on h2 listening")
    again = ask(h2.address, ping)
    assert again == {"ok": False, "error": "refused: replayed message: this nonce was seen before",
                     "re": json.loads(json.loads(ping)["body"])["nonce"], "from": h2.name}
    wait_for(lambda: f"refused a message from {testbed.gateway}: sent to '{h1.name}'" in agent_log(testbed, h2),
             what="the agent logging the refusal")


def test_500_silent_clients_on_the_agent_port_do_not_delay_a_gang_restart(testbed, deployed):
    h1, h2, _ = testbed.hosts
    before = demo_health(testbed)
    leader = agent_pid(testbed, h1)
    idle = [socket.create_connection((h1.address, AGENT_PORT), timeout=10) for _ in range(500)]
    try:
        threads = len(os.listdir(f"/proc/{leader}/task"))
        assert threads < 64, threads  # not a thread per connection (before: over 500)
        os.kill(int(before[h2.name]["pid"]), 9)  # the member reports to the leader through the crowd
        after = wait_for(lambda: restarted_after(testbed, before), timeout=120,
                         what="demo restarted while 500 clients sit on the leader's agent port")
        assert all(alive(int(after[h]["pid"])) for h in after)
        assert_gang_whole(testbed)
    finally:
        for s in idle:
            s.close()
    assert agent_pid(testbed, h1) == leader
