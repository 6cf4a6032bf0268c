"""The host's state reply is parsed once into a HostState: every key the operator side reads,
the defaults for a host that answers only a few (no runtime yet), and the derived facts."""
from __future__ import annotations

import json

import pytest

from launcher.core.plan import File
from launcher.deploy.records import GangRecord, HostState, ProgramState, Started, Waiting, rendered_hashes

REPLY = {  # hostside's `state` (and the agent's snapshot.json), as current_state writes it
    "root": "/srv/d/node0", "secret_id": "abc123", "generation": "g2", "supervisord": True,
    "manifest": {"programs": [{"owner": "a", "owner_hash": "ha2"}, {"owner": "etcd", "owner_hash": "he"}]},
    "programs": [
        {"name": "a-r0", "group": "a", "state": "RUNNING", "pid": 41, "uptime": 12.5, "exitstatus": 0,
         "spawnerr": None},
        {"name": "etcd", "group": "etcd", "state": "EXITED", "pid": None, "uptime": None, "exitstatus": 1,
         "spawnerr": None},
    ],
    "gang": {"a": {"state": "FAILED", "restarts": 3, "reason": "a-r0 exited", "last_log": ["x", "y"],
                   "history": [1.0], "failed_at": 2.0}},
    "started": {"a": {"generation": "g1", "owner_hash": "ha1"}, "etcd": {}},
    "waiting": {"a": {"on": ["etcd"], "reason": "etcd not ready: refused", "since": 3.0}, "b": {}},
    "time": 4.0, "runtime_missing": False,
}


def test_a_full_reply_parses_into_fields():
    st = HostState.from_json(json.loads(json.dumps(REPLY)))
    assert (st.root, st.generation, st.supervisord, st.secret_id, st.runtime_missing) == \
        ("/srv/d/node0", "g2", True, "abc123", False)
    assert dict(st.hashes) == {"a": "ha2", "etcd": "he"}
    assert st.programs == (ProgramState("a-r0", "a", "RUNNING", 41, 12.5, 0),
                           ProgramState("etcd", "etcd", "EXITED", None, None, 1))
    assert st.gangs == {"a": GangRecord("FAILED", 3, "a-r0 exited", ("x", "y"))}
    assert st.started == {"a": Started("g1", "ha1")}  # an empty record is no start
    assert st.waiting == {"a": Waiting(("etcd",), "etcd not ready: refused", 3.0)}  # nor an empty wait
    assert st.alive("a") and not st.alive("etcd") and not st.alive("nobody")
    assert not st.blank


def test_an_owner_started_from_another_config_runs_an_older_one():
    st = HostState.from_json(REPLY)
    assert st.runs_older_config("a", "ha2")
    assert not st.runs_older_config("a", "ha1")
    assert not st.runs_older_config("etcd", "he")  # no start recorded: nothing to say


def test_a_host_without_any_runtime_answers_only_a_few_keys():
    # the bootstrap's reply where no runtime is installed (remote.BOOTSTRAP)
    st = HostState.from_json({"runtime_missing": True, "root": "/srv/d/node0", "deployed": False})
    assert st.runtime_missing and st.blank
    assert (st.generation, st.secret_id, st.programs, dict(st.hashes)) == (None, None, (), {})
    assert not st.alive("a") and not st.runs_older_config("a", "h")


def test_the_state_is_frozen():
    st = HostState.from_json(REPLY)
    with pytest.raises(AttributeError):
        st.generation = "g3"  # type: ignore[misc]
    with pytest.raises(TypeError):
        st.started["b"] = Started()  # type: ignore[index]


def test_rendered_hashes_read_the_generation_manifest():
    manifest = json.dumps({"programs": [{"owner": "a", "owner_hash": "h"}]}).encode()
    assert rendered_hashes({"manifest.json": File("manifest.json", manifest)}) == {"a": "h"}
