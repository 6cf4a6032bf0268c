"""`status` says why, on the testbed: a gang its leader holds because a member host is cut off
names that member, why and since when, in the table and in --json; a --json command that fails
answers with a JSON error object.

Instance `demo` spans h1 (its leader) and h2. h2 is cut off (`tb.isolate`), then the rank on
h1 is killed: the leader stops the gang and waits for h2 instead of restarting it.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from tests import helpers
from tests.helpers import alive, cli_on_testbed as cli, host_entry, run_cli, ssh_flags, topology_head, wait_for

TESTBED_HOSTS = 2
HEALTH = 18711
RESTART = "  restart: {max: 2, window: 600}\n"


def topology(tb) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    return f"""\
{topology_head("why", extra_defaults=RESTART)}hosts:
{hosts}instances:
  - name: demo
    hosts: [{tb.hosts[0].name}, {tb.hosts[1].name}]
    devices: [0]
    command: [launcher-demo-rank, --health-port, "{HEALTH}", --barrier-timeout, "120"]
"""


def health(address: str) -> dict | None:
    return helpers.health_json(address, HEALTH)


@pytest.fixture
def deployed(testbed, tmp_path):
    path = tmp_path / "why.yaml"
    path.write_text(topology(testbed))
    run = cli(testbed, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: all(health(h.address) for h in testbed.hosts), what="both demo ranks past their barrier")
    yield str(path)
    for h in testbed.hosts:
        testbed.restore(h.name)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def test_a_gang_held_for_a_cut_off_member_says_for_whom_why_and_since_when(testbed, deployed):
    h1, h2 = testbed.hosts
    rank = int(health(h1.address)["pid"])
    testbed.isolate(h2.name)
    try:
        os.kill(rank, 9)
        seen: list = []

        def held():
            run = cli(testbed, "status", deployed, "--json")
            seen[:] = [r for r in json.loads(run.out) if r["host"] == h1.name]
            return seen[0] if seen and seen[0]["state"] == "WAITING" else None
        try:
            row = wait_for(held, what="demo WAITING on the cut-off member")
        except AssertionError:
            raise AssertionError(f"demo not waiting; status: {seen}")
        cut = f"member {h2.name} ({h2.address}) unreachable"
        assert row["reason"] and cut in row["reason"], row
        wait = row["waiting"]
        assert wait["on"] == [h2.name] and cut in wait["reason"], wait
        assert isinstance(wait["since"], float) and wait["since"] <= time.time(), wait
        since = time.strftime("%H:%M:%S", time.localtime(wait["since"]))
        assert wait["since_text"] == since
        table = cli(testbed, "status", deployed)
        assert table.code == 1
        assert f"WAITING ({h2.name}) since {since}: {cut}" in table.out, table.out
        # the hosts agree: the killed rank is gone and nothing of demo listens on h1
        assert not alive(rank)
        assert testbed.run(h1, ["ss", "-ltnH", f"sport = :{HEALTH}"]).stdout.strip() == ""
        # a --json command that fails answers with a JSON error (on stdout), exit 1, naming the host
        run = cli(testbed, "up", deployed, "--json")
        assert run.code == 1, run.err
        doc = json.loads(run.out)
        assert doc["ok"] is False and doc["exit"] == 1 and h2.name in doc["error"], doc
        assert list(doc["hosts"]) == [h2.name], doc
    finally:
        testbed.restore(h2.name)
    back = wait_for(lambda: (r := [x for x in json.loads(cli(testbed, "status", deployed, "--json").out)
                                   if x["host"] == h1.name][0])["state"] == "RUNNING" and r["restarts"] >= 1 and r,
                    timeout=180, what="demo restarted once h2 answers again")
    assert back["waiting"] is None and back["ready"] is None  # no probe: readiness is not claimed either way
