"""The --json outputs scripts rely on match their documented JSON Schemas (launcher/schemas/):
`plan` of every example config, `status` rows of every shape, `events` from a host's journal."""
from __future__ import annotations

import json

import jsonschema
import pytest

from launcher.deploy.records import Detail, Drift, DriftKind, StatusRow
from launcher.host import events
from launcher.cli.statusview import status_json
from tests.helpers import ROOT, run_cli

SCHEMAS = ROOT / "launcher" / "schemas"


def check(name: str, doc: object) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_plan_json_of_every_example(config):
    run = run_cli("plan", str(ROOT / "configs" / config), "--json")
    assert run.code == 0, run.err
    check("plan", json.loads(run.out))


def test_the_plan_schema_refuses_what_plan_does_not_print():
    run = run_cli("plan", str(ROOT / "configs" / "demo-local.yaml"), "--json")
    doc = json.loads(run.out)
    doc["hosts"][0]["programs"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        check("plan", doc)


def test_status_rows_of_every_shape():
    rows = [
        StatusRow("demo", "h1", 0, "demo-r0", "RUNNING", pid=10, uptime=3.5, restarts=1, generation="g",
                  desired_generation="g", detail=Detail(started_generation="g"), ready=True),
        StatusRow("demo", "h2", 1, "demo-r1", "FAILED", generation="g", desired_generation="g",
                  detail=Detail(started_generation="g", exitstatus=-1, reason="killed", last_log=("a", "b"))),
        StatusRow("demo", "h3", 2, "demo-r2", "WAITING", drift=(Drift(DriftKind.WAITING, why="member h2"),),
                  waiting_on=("h2",), waiting_since=1.5, detail=Detail()),
        StatusRow("etcd", "h1", None, "etcd", "RUNNING", pid=3, container="abc", container_state="running",
                  ready=False, probe_error="connection refused"),
        StatusRow("x", "h4", None, "x", "UNREACHABLE", in_plan=True),
        StatusRow("stray", "h1", None, "stray", "RUNNING", pid=4, in_plan=False),
    ]
    check("status", [status_json(r) for r in rows])


def test_events_from_a_journal(tmp_path):
    for d in ("state", "logs"):
        (tmp_path / d).mkdir()
    root = str(tmp_path)
    prog = {"name": "r0", "group": "demo", "state": "RUNNING", "start": 5, "pid": 7, "exitstatus": 0}
    events.observe(root, {"time": 1, "generation": "g1", "supervisord": True, "programs": [prog]})
    events.observe(root, {"time": 6, "generation": "g1", "supervisord": True,
                          "programs": [{**prog, "state": "EXITED", "exitstatus": -1}],
                          "gang": {"demo": {"state": "RESTARTING", "restarts": 0, "reason": "r", "backoff": 1.0}},
                          "waiting": {"demo": {"on": ["h2"], "reason": "cut", "since": 5.5}},
                          "orphans": [{"pid": 9}]})
    events.observe(root, {"time": 8, "generation": "g2", "supervisord": False,
                          "programs": [{**prog, "start": 7}],
                          "gang": {"demo": {"state": "FAILED", "restarts": 1, "reason": "r", "last_restart": 7,
                                            "failed_at": 8}}})
    events.note(root, "leftovers", "demo: stopped 1 process")
    got = events.read(root, 0)
    assert {e["kind"] for e in got} >= {"start", "exit", "gang_restarting", "gang_restarted", "gang_failed", "wait",
                                        "wait_over", "orphans", "orphans_gone", "switch", "supervisord", "leftovers"}
    check("events", got)
