"""`restart_with:`: an instance restarts after what it names restarts, once that is ready again.

Validation (unknown names, itself, cycles, at line:col), the implied start order, the set a
restart brings along (transitive, with the LLM-DataDist relink set), and what each host's agent
gets in gang.json: the followers' leaders and the probes that say the new run is ready."""
from __future__ import annotations

import json

from launcher.core.graph import dependency_edges, restart_after, start_levels
from launcher.core.pipeline import compile_text
from launcher.core.render import render
from tests.unit.core.test_validation import BASE_HOSTS, assert_error, check

TOPO = BASE_HOSTS + """\
services:
  - {name: head, kind: generic, hosts: [a], command: [h], probe: {tcp: "10.1.0.1:6379"}}
  - {name: logs, kind: generic, hosts: [a, b], command: [l], probe: {log: "up"}}
instances:
  - {name: drv, hosts: [b], devices: [0], command: [d], processes: per_host, restart_with: WITH}
  - {name: api, hosts: [a], devices: [1], command: [a], restart_with: [drv]}
"""


def topo(with_: str = "[head]") -> str:
    return TOPO.replace("WITH", with_)


def test_restart_with_implies_the_start_order():
    t = compile_text(topo()).topology
    assert dependency_edges(t)["drv"] == ("head",)
    assert start_levels(dependency_edges(t)) == (("head", "logs"), ("drv",), ("api",))


def test_a_restart_brings_its_followers_transitively_in_waves():
    plan = compile_text(topo("[head, logs]")).plan
    assert dict(plan.restart_with) == {"drv": ("head", "logs"), "api": ("drv",)}
    assert restart_after(plan.links, plan.restart_with, ["head"]) == ["drv", "api"]
    assert restart_after(plan.links, plan.restart_with, ["drv"]) == ["api"]
    assert restart_after(plan.links, plan.restart_with, ["api"]) == []
    assert restart_after(plan.links, plan.restart_with, ["head", "drv"]) == ["api"]


def test_gang_json_tells_each_agent_whom_to_tell_and_whom_to_ask():
    files = render(compile_text(topo("[head, logs]")).plan)
    a, b = (json.loads(files[h]["gang.json"].content) for h in ("a", "b"))
    head = a["gangs"]["head"]
    assert head["followers"] == [{"group": "drv", "leaders": [{"host": "b", "address": "10.1.0.2"}]}]
    assert [p["kind"] for p in head["ready"]] == ["tcp"]
    # a log probe cannot tell the new run from the last: no ready probe, and per host for a service
    assert a["gangs"]["logs"]["ready"] == [] and b["gangs"]["logs"]["followers"][0]["group"] == "drv"
    drv = b["gangs"]["drv"]
    assert drv["restart_with"] == [{"owner": "head", "leaders": [{"host": "a", "address": "10.1.0.1"}]},
                                   {"owner": "logs", "leaders": [{"host": "a", "address": "10.1.0.1"},
                                                                 {"host": "b", "address": "10.1.0.2"}]}]
    assert drv["followers"] == [{"group": "api", "leaders": [{"host": "a", "address": "10.1.0.1"}]}]
    assert "followers" not in a["gangs"]["api"] and "restart_with" not in a["gangs"]["head"]


def test_unknown_name(tmp_path):
    assert_error(tmp_path, topo("[hed]"),
                 "F:18:93: error: instances[0].restart_with[0]: drv restarts with unknown 'hed'")


def test_itself(tmp_path):
    assert_error(tmp_path, topo("[drv]"), "F:18:93: error: instances[0].restart_with[0]: drv restarts with itself")


def test_a_cycle_through_restart_with_names_it(tmp_path):
    assert_error(tmp_path, topo("[api]"), "F:18:92: error: instances[0].restart_with: dependency cycle: "
                                          "drv -> api -> drv (drv -> api because drv restarts with api; "
                                          "api -> drv because api restarts with drv)")


def test_a_valid_topology_passes(tmp_path):
    code, lines = check(tmp_path, topo())
    assert code == 0, lines


def test_a_rolling_restart_brings_the_followers_after_what_they_follow():
    from launcher.deploy.rolling import roll_batches
    plan = compile_text(topo()).plan
    assert roll_batches(plan.links, ["drv"], 2, plan.restart_with) == [["drv"], ["api"]]
    assert roll_batches(plan.links, ["api", "drv"], 2, plan.restart_with) == [["drv"], ["api"]]
