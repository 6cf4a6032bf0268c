"""The agent's records in ROOT/state: a gang's FAILED record, and the state files it shares with the actions."""
from __future__ import annotations

import json

from launcher.host.agent import Agent
from launcher.host.state import desired, set_desired, update_state


def _root(tmp_path):
    root = tmp_path / "root"
    (root / "state").mkdir(parents=True)
    return root


def test_a_failed_record_keeps_the_gangs_history_and_says_why(tmp_path):
    root = _root(tmp_path)
    (root / "state" / "gang.json").write_text(json.dumps(
        {"g": {"state": "RUNNING", "restarts": 2, "history": [1.0, 2.0]}, "other": {"state": "RUNNING"}}))
    Agent(str(root))._record_failed("g", "rank program g-0 on a exited with exit code 1 (EXITED)",
                                    {"log": ["last line"]})
    gangs = json.loads((root / "state" / "gang.json").read_text())
    assert gangs["other"] == {"state": "RUNNING"}
    g = gangs["g"]
    assert (g["state"], g["restarts"], g["history"], g["last_log"]) == ("FAILED", 2, [1.0, 2.0], ["last line"])
    assert g["reason"] == "rank program g-0 on a exited with exit code 1 (EXITED)" and g["failed_at"] > 0
    snapshot = json.loads((root / "state" / "snapshot.json").read_text())  # what `status` reads
    assert snapshot["gang"]["g"]["state"] == "FAILED"


def test_a_gang_failed_before_any_record_gets_a_fresh_one(tmp_path):
    root = _root(tmp_path)
    Agent(str(root))._record_failed("g", "why", {})
    g = json.loads((root / "state" / "gang.json").read_text())["g"]
    assert (g["state"], g["restarts"], g["history"], g["last_log"], g["reason"]) == ("FAILED", 0, [], [], "why")


def test_state_updates_merge_and_a_none_deletes(tmp_path):
    root = _root(tmp_path)
    set_desired(str(root), "a", True)
    set_desired(str(root), "b", False)
    assert desired(str(root)) == {"a": True, "b": False}
    update_state(str(root), "desired.json", {"a": None, "c": True})
    assert desired(str(root)) == {"b": False, "c": True}
    before = (root / "state" / "desired.json").stat().st_ino
    update_state(str(root), "desired.json", {"b": False})  # no change: no write (a write renames a new file in)
    assert (root / "state" / "desired.json").stat().st_ino == before


def test_a_report_from_a_run_the_last_restart_replaced_is_dropped():
    from launcher.host.members import seen_before_restart
    record = {"state": "RUNNING", "started": {"b": 1000.4}}  # b was told to start again at 1000.4 (b's clock)
    old = {"host": "b", "program": "g-1", "start": 900}  # the run before: in flight while the gang restarted
    assert seen_before_restart(old, record) == "it was seen in a run started 100 s before the gang's last restart"
    # the new run's own failure (supervisord's start is whole seconds: up to 1 s before started_at)
    assert seen_before_restart({"host": "b", "program": "g-1", "start": 1000}, record) is None
    assert seen_before_restart({"host": "b", "program": "g-1", "start": 1003}, record) is None
    assert seen_before_restart({"host": "c", "start": 900}, record) is None  # no record for that host
    assert seen_before_restart(old, None) is None  # no restart yet (or an operator's start cleared it)
    assert seen_before_restart({"host": "b"}, record) is None  # an older agent's report: no start


def test_a_leader_drops_a_report_its_last_restart_superseded(tmp_path):
    root = _root(tmp_path)
    (root / "current").mkdir()
    gang = {"leader": "a", "members": [{"host": "a", "address": "127.0.0.1"}]}
    (root / "current" / "gang.json").write_text(json.dumps(
        {"host": "a", "address": "127.0.0.1", "agent_port": 1, "restart_max": 3, "restart_window": 600,
         "gangs": {"g": gang}}))
    record = {"state": "RUNNING", "restarts": 1, "history": [1000.0], "started": {"a": 1000.2}}
    (root / "state" / "gang.json").write_text(json.dumps({"g": record}))
    Agent(str(root)).handle_failure("g", {"host": "a", "program": "g-0", "start": 900, "exitstatus": 1})
    assert json.loads((root / "state" / "gang.json").read_text())["g"] == record  # nothing restarted, no FAILED


def test_a_new_agent_forgets_the_previous_ones_report_waits_only(tmp_path):
    from launcher.host.members import REPORTING, forget_reporting, held_gangs
    root = _root(tmp_path)
    waits = {"reporting": {"on": ["a"], "reason": "cannot report ...", "since": 1.0, "kind": REPORTING},
             "held": {"on": ["b"], "reason": "member b unreachable", "since": 1.0, "report": {"host": "a"}},
             "deps": {"on": ["etcd"], "reason": "etcd: tcp ...", "since": 1.0}}
    (root / "state" / "waiting.json").write_text(json.dumps(waits))
    forget_reporting(str(root))
    left = json.loads((root / "state" / "waiting.json").read_text())
    assert left == {"held": waits["held"], "deps": waits["deps"]}  # a leader's hold and a dependency wait stay
    assert held_gangs(str(root)) == {"held": {"host": "a"}}
