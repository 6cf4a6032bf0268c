"""The agent's records in ROOT/state: a gang's FAILED record, and the state files it shares with the actions."""
from __future__ import annotations

import json

from launcher.host.agent import Agent
from launcher.host.restart import record_failed
from launcher.host.state import desired, set_desired, update_state


def _root(tmp_path):
    root = tmp_path / "root"
    (root / "state").mkdir(parents=True)
    return root


def test_a_failed_record_keeps_the_gangs_history_and_says_why(tmp_path):
    root = _root(tmp_path)
    (root / "state" / "gang.json").write_text(json.dumps(
        {"g": {"state": "RUNNING", "restarts": 2, "history": [1.0, 2.0]}, "other": {"state": "RUNNING"}}))
    record_failed(str(root), "g", "rank program g-0 on a exited with exit code 1 (EXITED)",
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
    record_failed(str(root), "g", "why", {})
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


def _bump_many(root: str, key: str, n: int) -> None:
    for i in range(n):
        update_state(root, "desired.json", {f"{key}-{i}": True})


def _count_many(root: str, key: str, n: int) -> None:
    from launcher.host.state import read_json, state_lock, state_path, write_json
    for _ in range(n):
        with state_lock(root):  # what the agent's restart takes around its record's read and write
            doc = read_json(state_path(root, "gang.json"), {})
            doc[key] = doc.get(key, 0) + 1
            update_state(root, "waiting.json", {key: doc[key]})  # re-entrant: an update inside
            write_json(state_path(root, "gang.json"), doc)


def _in_processes(target, root: str) -> None:
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=(root, k, 150)) for k in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0]


def test_state_updates_from_several_processes_lose_nothing(tmp_path):
    """The host actions are other processes than the agent: one flock, not a thread lock, keeps
    their read-modify-writes of one file apart (before: 181 of 450 updates kept)."""
    root = str(_root(tmp_path))
    _in_processes(_bump_many, root)
    assert len(desired(root)) == 450


def test_a_locked_read_modify_write_across_processes_loses_nothing(tmp_path):
    root = str(_root(tmp_path))
    _in_processes(_count_many, root)
    assert json.loads((tmp_path / "root" / "state" / "gang.json").read_text()) == {"a": 150, "b": 150, "c": 150}


def test_a_deliberate_stop_drops_the_restart_intent_and_keeps_the_record(tmp_path):
    from launcher.host.state import drop_intents
    root = _root(tmp_path)
    rec = {"state": "RESTARTING", "restarts": 1, "history": [5.0], "intent": {"id": "x", "report": {}}}
    (root / "state" / "gang.json").write_text(json.dumps({"g": rec, "h": {"state": "RUNNING"}}))
    drop_intents(str(root), ["g", "absent"])
    assert json.loads((root / "state" / "gang.json").read_text()) == {
        "g": {"state": "RESTARTING", "restarts": 1, "history": [5.0]}, "h": {"state": "RUNNING"}}


def test_state_files_are_fsynced_before_their_rename(tmp_path, monkeypatch):
    """A power loss leaves the old state file or the new one, never an empty one: the data is on
    disk before the rename makes it the file (the order the kernel is asked for, recorded)."""
    import os as _os
    from launcher.host import state as st
    calls: list[str] = []
    real_fsync, real_replace = _os.fsync, _os.replace
    monkeypatch.setattr(st.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(st.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    st.write_json(str(tmp_path / "x.json"), {"a": 1})
    (tmp_path / "state").mkdir()
    st.write_secret(str(tmp_path), b"key", force=True)
    assert calls == ["fsync", "replace", "fsync", "replace"]


def test_each_runs_every_member_call_at_once_bounded_and_hands_back_results_and_errors_in_order(tmp_path, monkeypatch):
    """A leader starts or stops every member at once: each call's result or exception comes back
    in the members' order, and no more than EACH_AT_ONCE run at the same time."""
    import threading
    import time

    from launcher.host import agent as agent_mod
    monkeypatch.setattr(agent_mod, "EACH_AT_ONCE", 3)
    agent = Agent(str(_root(tmp_path)))
    running, peak, lock = [0], [0], threading.Lock()

    def call(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        if i == 4:
            raise ConnectionRefusedError(f"member {i}")
        return i * 10

    out = agent.each(call, list(range(8)))
    assert [o if not isinstance(o, BaseException) else str(o) for o in out] == [0, 10, 20, 30, "member 4", 50, 60, 70]
    assert isinstance(out[4], ConnectionRefusedError)
    assert peak[0] == 3  # at once, but bounded
