"""Gang restarts across a partition, on the testbed: a member cut off while a rank dies on the
leader's host, a leader its members cannot reach, and a report an operator's `up` superseded.

3 hosts; instance `demo` spans h1 (its leader) and h2 on NPU 0; h3 runs `other`. Hosts are cut
off with `tb.isolate` (the link down) or, where the operator must still reach the host over
SSH, with a routing rule on the member that refuses only the leader's agent port.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import alive, ssh_flags, cli_on_testbed as cli, run_cli, wait_for

TESTBED_HOSTS = 3
TESTBED_CLOCKS = True  # h2's clock is set off in a test (by the testbed: tests/testbed/clockshift.c)
HEALTH = 18710
AGENT_PORT = 29390


def topology(tb) -> str:
    hosts = "".join(helpers.host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    h1, h2, h3 = (h.name for h in tb.hosts)
    return f"""\
version: 1
name: part
defaults:
  deploy_dir: /srv/launcher
  restart: {{max: 2, window: 600}}
  preflight: false
hosts:
{hosts}instances:
  - name: demo
    hosts: [{h1}, {h2}]
    devices: [0]
    command: [launcher-demo-rank, --health-port, "{HEALTH}", --barrier-timeout, "120"]
  - name: other
    hosts: [{h3}]
    devices: [0]
    command: [launcher-demo-rank, --health-port, "{HEALTH}"]
"""


@pytest.fixture
def deployed(testbed, tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(topology(testbed))
    run = cli(testbed, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: demo_health(testbed), what="both demo ranks past their barrier")
    yield str(path)
    for h in testbed.hosts:  # whatever a test cut, put back before tearing down
        testbed.restore(h.name)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))




def rows(tb, path: str) -> list[dict]:
    return json.loads(cli(tb, "status", path, "--json").out)


def demo_health(tb) -> dict[str, dict] | None:
    return helpers.demo_health(tb, HEALTH, hosts=2)


def agent_log(tb, host: str) -> str:
    h = tb.host(host)
    return Path(h.path(f"/srv/launcher/part/{host}/logs/launcher-agent.log")).read_text(errors="replace")


def restarted_after(tb, before: dict[str, dict]):
    now = demo_health(tb)
    return now if now and all(now[h]["barrier_passed_at"] > before[h]["barrier_passed_at"]
                              and now[h]["pid"] != before[h]["pid"] for h in before) else None


def test_a_cut_off_member_makes_the_gang_wait_and_it_restarts_when_back(testbed, deployed):
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    before = demo_health(testbed)
    testbed.isolate(h2.name)
    try:
        os.kill(int(before[h1.name]["pid"]), 9)  # a rank dies on the leader's host
        seen: list = []

        def waiting():
            seen[:] = rows(testbed, deployed)
            mine = [r for r in seen if r["instance"] == "demo" and r["host"] == h1.name]
            return mine if mine and mine[0]["state"] == "WAITING" else None
        try:
            mine = wait_for(waiting, what="demo WAITING on the cut-off member")
        except AssertionError:
            raise AssertionError(f"demo not waiting; status: {seen}; agent log: {agent_log(testbed, h1.name)}")
        assert mine[0]["waiting_on"] == [h2.name]
        drift = " ".join(mine[0]["drift"])
        assert f"member {h2.name} ({h2.address}) unreachable" in drift and "restarts when it answers" in drift
        table = cli(testbed, "status", deployed).out
        assert f"WAITING ({h2.name})" in table
        # not FAILED, and no restart budget spent while it waits (several failed stops by now)
        wait_for(lambda: agent_log(testbed, h1.name).count(f"member {h2.name} ({h2.address}) unreachable") >= 1,
                 what="the leader's log naming the member")
        assert all(r["state"] != "FAILED" and r["restarts"] == 0 for r in rows(testbed, deployed)
                   if r["instance"] == "demo" and r["host"] == h1.name)
        assert not alive(int(before[h1.name]["pid"]))
    finally:
        testbed.restore(h2.name)
    # back: the leader restarts the whole gang by itself, no operator
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180,
                     what="demo restarted on both hosts after the member came back")
    assert all(alive(int(after[h]["pid"])) for h in after)
    assert not alive(int(before[h2.name]["pid"]))  # the member's old rank was stopped, not left over
    final = wait_for(lambda: [r for r in rows(testbed, deployed) if r["instance"] == "demo"
                              and r["state"] == "RUNNING" and r["restarts"] >= 1] or None, what="restart recorded")
    assert not final[0]["waiting_on"]


def test_a_member_keeps_reporting_to_a_cut_off_leader_and_the_gang_restarts_when_it_is_back(testbed, deployed):
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    before = demo_health(testbed)
    testbed.isolate(h1.name)
    try:
        os.kill(int(before[h2.name]["pid"]), 9)  # a rank dies on the member while its leader is away
        seen: list = []

        def waiting():
            seen[:] = rows(testbed, deployed)
            mine = [r for r in seen if r["instance"] == "demo" and r["host"] == h2.name]
            return mine if mine and mine[0]["state"] == "WAITING" else None
        try:
            mine = wait_for(waiting, what="demo WAITING on its leader")
        except AssertionError:
            raise AssertionError(f"demo not waiting; status: {seen}; agent log: {agent_log(testbed, h2.name)}")
        assert mine[0]["waiting_on"] == [h1.name]
        assert f"cannot report the failure of demo-r1 to leader {h1.name} ({h1.address})" in " ".join(mine[0]["drift"])
        assert f"WAITING ({h1.name})" in cli(testbed, "status", deployed).out
        assert not alive(int(before[h2.name]["pid"]))
        wait_for(lambda: agent_log(testbed, h2.name).count("cannot report the failure of demo-r1") >= 3,
                 what="the member reporting again and again")
    finally:
        testbed.restore(h1.name)
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180,
                     what="demo restarted on both hosts once the leader was back")
    assert all(alive(int(after[h]["pid"])) for h in after)
    assert not alive(int(before[h1.name]["pid"]))
    wait_for(lambda: all(not r["waiting_on"] and r["state"] == "RUNNING" for r in rows(testbed, deployed)),
             what="no wait left in status")
    assert f"leader {h1.name} ({h1.address}) took the report" in agent_log(testbed, h2.name)


def test_a_report_an_operators_up_superseded_is_dropped(testbed, deployed):
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    before = demo_health(testbed)
    # h2 can no longer reach h1's agent (only its port: the operator, SSH and the ranks still can)
    block = ["ip", "rule", "add", "priority", "100", "to", h1.address, "ipproto", "tcp", "dport", str(AGENT_PORT),
             "prohibit"]
    testbed.run(h2.name, block, check=True)
    try:
        os.kill(int(before[h2.name]["pid"]), 9)
        wait_for(lambda: [r for r in rows(testbed, deployed) if r["host"] == h2.name and r["instance"] == "demo"
                          and r["state"] == "WAITING" and r["waiting_on"] == [h1.name]] or None,
                 what="demo WAITING on its leader")
        run = cli(testbed, "up", deployed)  # the operator brings the gang back
        assert run.code == 0, run.err
        restored = wait_for(lambda: restarted_after(testbed, before), what="demo back after the operator's up")
    finally:
        testbed.run(h2.name, ["ip", "rule", "del", "priority", "100"], check=True)
    wait_for(lambda: "dropped the report of demo-r1" in agent_log(testbed, h2.name), timeout=120,
             what="the member dropping its superseded report")
    assert "dropped the report of demo-r1: the " in agent_log(testbed, h2.name)
    now = rows(testbed, deployed)
    demo = [r for r in now if r["instance"] == "demo"]
    assert all(r["state"] == "RUNNING" and r["restarts"] == 0 and not r["waiting_on"] for r in demo), demo
    assert {r["host"]: r["pid"] for r in demo} == {h: d["pid"] for h, d in restored.items()}  # not restarted again
    assert all(alive(int(d["pid"])) for d in restored.values())


def _ask_agent(address: str, line: bytes) -> dict:
    """The agent's reply to one line, as the reply's signed body says it (without `re` and `from`)."""
    import socket
    with socket.create_connection((address, AGENT_PORT), timeout=10) as s:
        s.sendall(line)
        body = json.loads(json.loads(s.makefile("rb").readline())["body"])
    return {k: v for k, v in body.items() if k not in ("re", "from")}


def test_an_agent_refuses_a_replay_a_skewed_clock_and_another_key_each_as_such(testbed, deployed):
    import time
    from launcher.host.messages import sign as signed
    h1 = testbed.hosts[0]
    key = Path(h1.path(f"/srv/launcher/part/{h1.name}/state/secret")).read_bytes().strip()

    def sign(key: bytes, body: dict, now: float | None = None) -> bytes:
        return signed(key, body, now, sender="operator", to=h1.name, deployment="part")
    line = sign(key, {"op": "ping"})
    assert _ask_agent(h1.address, line)["ok"] is True
    again = _ask_agent(h1.address, line)  # the same message captured and sent again
    assert again == {"ok": False, "error": "refused: replayed message: this nonce was seen before"}
    skewed = _ask_agent(h1.address, sign(key, {"op": "ping"}, now=time.time() - 3600))
    assert skewed["ok"] is False and skewed["error"].startswith("refused: clock skew: the message is stamped -360")
    wrong = _ask_agent(h1.address, sign(b"another key", {"op": "ping"}))
    assert wrong["ok"] is False and wrong["error"].startswith("refused: bad signature: signed with another key")
    gateway = testbed.gateway  # the operator side of the bridge: where these came from
    for why in ("replayed message", "clock skew", "bad signature"):  # supervisord writes the log a bit later
        wait_for(lambda: f"refused a message from {gateway}: {why}" in agent_log(testbed, h1.name),
                 what=f"the agent logging the {why}")


def test_a_member_with_a_skewed_clock_is_told_so_and_the_gang_restarts_once_it_is_fixed(testbed, deployed):
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    before = demo_health(testbed)
    # h2's clock 400 s ahead: the testbed's hosts share one kernel clock, so the testbed runs
    # h2's processes with a shifted wall clock (TESTBED_CLOCKS); the product has no clock hook
    testbed.set_clock(h2.name, 400)
    try:
        os.kill(int(before[h2.name]["pid"]), 9)
        seen: list = []

        def told():
            seen[:] = rows(testbed, deployed)
            mine = [r for r in seen if r["instance"] == "demo" and r["host"] == h2.name and r["state"] == "WAITING"]
            return mine if mine and "clock skew" in " ".join(mine[0]["drift"]) else None
        try:
            mine = wait_for(told, what="the member's wait saying clock skew")
        except AssertionError:
            raise AssertionError(f"status: {seen}; agent log: {agent_log(testbed, h2.name)}") from None
        drift = " ".join(mine[0]["drift"])
        assert f"cannot report the failure of demo-r1 to leader {h1.name} ({h1.address})" in drift
        assert "refused: clock skew: the message is stamped +400 s from this host's clock" in drift
        assert "bad signature" not in drift
        wait_for(lambda: f"refused a message from {h2.address}: clock skew" in agent_log(testbed, h1.name),
                 what="the leader logging the skewed clock")
        assert "refused: clock skew" in agent_log(testbed, h2.name)  # and the member too
    finally:
        testbed.set_clock(h2.name, 0)
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180,
                     what="demo restarted once the clock was right")
    assert all(alive(int(after[h]["pid"])) for h in after)


def test_a_leader_agent_restarted_during_the_wait_goes_on_waiting_and_restarts_the_gang(testbed, deployed):
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    before = demo_health(testbed)
    pid_file = Path(h1.path(f"/srv/launcher/part/{h1.name}/state/agent.pid"))
    testbed.isolate(h2.name)
    try:
        os.kill(int(before[h1.name]["pid"]), 9)
        wait_for(lambda: [r for r in rows(testbed, deployed) if r["host"] == h1.name and r["instance"] == "demo"
                          and r["state"] == "WAITING" and r["waiting_on"] == [h2.name]] or None,
                 what="demo WAITING on the cut-off member")
        old_agent = int(pid_file.read_text())
        os.kill(old_agent, 9)  # supervisord starts the agent again
        wait_for(lambda: not alive(old_agent) and pid_file.exists() and int(pid_file.read_text()) != old_agent
                 and alive(int(pid_file.read_text())), what="a new agent on h1")
        wait_for(lambda: "gang demo: resuming the wait for its members" in agent_log(testbed, h1.name),
                 what="the new agent resuming the wait")
        demo = [r for r in rows(testbed, deployed) if r["host"] == h1.name and r["instance"] == "demo"]
        assert demo[0]["state"] == "WAITING" and demo[0]["waiting_on"] == [h2.name], demo
    finally:
        testbed.restore(h2.name)
    after = wait_for(lambda: restarted_after(testbed, before), timeout=180,
                     what="demo restarted by the new agent once the member was back")
    assert all(alive(int(after[h]["pid"])) for h in after)
    wait_for(lambda: all(not r["waiting_on"] and r["state"] == "RUNNING" for r in rows(testbed, deployed)),
             what="no wait left in status")
