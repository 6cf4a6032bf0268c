"""`launcher events` on the testbed: a rank killed -9 on one host and its gang's restart, led from
the other, in one timeline in time order, with the cause, the signal and the dead rank's last log
lines; the journal survives its agent's kill -9; --since cuts the timeline.

Instance `demo` spans h1 (its leader) and h2; the rank on h2 is killed.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.unit.test_json_schemas import check
from tests.helpers import alive, cli_on_testbed as cli, demo_deployed, health_json, \
    two_host_demo, wait_for

TESTBED_HOSTS = 2
HEALTH = 18731


@pytest.fixture
def deployed(testbed, tmp_path):
    path = tmp_path / "events.yaml"
    path.write_text(two_host_demo(testbed, "events", HEALTH))
    with demo_deployed(testbed, path, HEALTH) as deployed_path:
        yield deployed_path


def timeline(testbed, path: str, *more: str) -> list[dict]:
    run = cli(testbed, "events", path, "--json", *more)
    assert run.code == 0, run.err
    return json.loads(run.out)


def test_a_killed_rank_and_its_gang_restart_in_one_timeline(testbed, deployed):
    h1, h2 = testbed.hosts
    first = timeline(testbed, deployed)
    assert {(e["host"], e["kind"], e.get("program")) for e in first} >= {
        (h1.name, "start", "demo-r0"), (h2.name, "start", "demo-r1")}
    victim = int(health_json(h2.address, HEALTH)["pid"])
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)

    def new_starts(got: list[dict]) -> set[str]:
        # the new runs' starts (supervisord's start times are whole seconds: up to 1 s before the decision)
        decided = next((e["time"] for e in got if e["kind"] == "gang_restarting" and e["time"] >= killed_at - 1), None)
        return set() if decided is None else {e["host"] for e in got if e["kind"] == "start" and e["time"] >= int(decided)}

    def restarted():  # each host journals its own start when its agent sees it: after the leader's word
        got = timeline(testbed, deployed)
        return got if any(e["kind"] == "gang_restarted" for e in got) and len(new_starts(got)) == 2 else None
    got = wait_for(restarted, timeout=120, what="the gang's restart and both new starts in the timeline")
    assert [float(e["time"]) for e in got] == sorted(float(e["time"]) for e in got)
    check("events", got)
    new = [e for e in got if e["time"] >= killed_at - 1]
    death = next(e for e in new if e["kind"] == "exit")
    assert (death["host"], death["program"], death["signal"], death["exit_code"]) == (h2.name, "demo-r1", 9, -1)
    assert death["log"] and any("demo" in line or "rank" in line for line in death["log"]), death["log"]
    restarting = next(e for e in new if e["kind"] == "gang_restarting")
    assert restarting["host"] == h1.name and restarting["gang"] == "demo"
    assert f"rank program demo-r1 on {h2.name} was killed by a signal" in restarting["cause"]
    assert restarting["backoff"] == 0
    done = next(e for e in new if e["kind"] == "gang_restarted")
    assert done["host"] == h1.name and done["restarts"] == 1
    order = [e["kind"] for e in new if e["kind"] in ("exit", "gang_restarting", "gang_restarted")]
    assert order == ["exit", "gang_restarting", "gang_restarted"], [(e["time"], e["host"], e["message"]) for e in new]
    assert new_starts(got) == {h1.name, h2.name}, new

    table = cli(testbed, "events", deployed)
    assert table.code == 0, table.err
    assert "killed by signal 9" in table.out and "gang demo restarted on all its hosts (restart 1)" in table.out

    # the journal is a file: the agent's kill -9 loses nothing, and its successor goes on writing
    agent_pid = int(testbed.run(h1.name, ["cat", f"/srv/launcher/events/{h1.name}/state/agent.pid"]).stdout)
    os.kill(agent_pid, signal.SIGKILL)
    wait_for(lambda: not alive(agent_pid), what="h1's agent gone")
    after = timeline(testbed, deployed)
    assert [e for e in after if e in got] == got
    wait_for(lambda: health_json(h1.address, HEALTH), what="demo still serving on h1")
    cut = float(done["time"])
    later = timeline(testbed, deployed, "--since", repr(cut))
    assert later and all(float(e["time"]) >= cut for e in later)
    assert not any(e["kind"] == "exit" and e["program"] == "demo-r1" for e in later)
