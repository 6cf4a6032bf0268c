"""The status fast path trusts the agent's snapshot only as far as /proc agrees (point 5)."""
from __future__ import annotations

from launcher.deploy.records import HostState
from launcher.deploy.remote import verified_snapshot


def stat(pid: int, state: str, start: int) -> str:
    rest = " ".join(["0"] * 12)  # minflt .. cutime, before starttime (field 22)
    return f"{pid} ({'a) b'}) {state} 1 {pid} {pid} 0 -1 4194560 {rest} {start} 0 0"


SNAP = {"programs": [{"name": "demo-r0", "group": "demo", "state": "RUNNING", "pid": 41, "uptime": 5.0,
                      "starttime": 1000},
                     {"name": "demo-r1", "group": "demo", "state": "EXITED", "pid": None, "uptime": None}]}


def proc(*lines: str) -> str:
    return "\n".join(["uptime 120.50", "hz 100", *lines])


def test_uptime_comes_from_the_start_time_not_the_snapshot():
    got = verified_snapshot(SNAP, proc("7 " + stat(7, "S", 500), "41 " + stat(41, "S", 1000)))
    assert got is not None
    assert got["programs"][0]["uptime"] == 110.5  # 120.5 s up, started 10 s after boot
    assert got["programs"][1] == SNAP["programs"][1]


def test_dead_zombie_or_reused_pids_and_a_dead_agent_are_not_trusted():
    agent = "7 " + stat(7, "S", 500)
    assert verified_snapshot(SNAP, proc(agent, "41 ")) is None                       # gone
    assert verified_snapshot(SNAP, proc(agent, "41 " + stat(41, "Z", 1000))) is None  # unreaped
    assert verified_snapshot(SNAP, proc(agent, "41 " + stat(41, "S", 2000))) is None  # pid reused
    assert verified_snapshot(SNAP, proc("7 " + stat(7, "Z", 500), "41 " + stat(41, "S", 1000))) is None
    assert verified_snapshot(SNAP, proc("7 ", "41 " + stat(41, "S", 1000))) is None
    assert verified_snapshot(SNAP, "") is None


def test_orphans_cross_the_boundary_as_records():
    st = HostState.from_json({"generation": "g", "supervisord": False,
                              "orphans": [{"pid": 9, "pgid": 8, "name": "a-r0", "group": "a"},
                                          {"pid": 8, "pgid": 8, "name": "a-r0", "group": "a"}]})
    from launcher.deploy.records import orphan_pids
    assert orphan_pids(st.orphans, "a-r0") == (8, 9)  # the program's own process (group leader) first
    assert orphan_pids(st.orphans, "a-r1") == ()


def test_status_rows_say_orphaned_with_the_pids_even_for_a_failed_gang():
    from launcher.core.model import Limits
    from launcher.core.plan import Program
    from launcher.deploy.records import DriftKind, GangRecord
    from launcher.deploy.status import _host_rows
    progs = tuple(Program(f"a-r{i}", "n0", "a", "rank", ("x",), None, (), Limits(), False, rank=i) for i in (0, 1))
    st = HostState.from_json({"generation": "g", "supervisord": False,
                              "orphans": [{"pid": 8, "pgid": 8, "name": "a-r0", "group": "a"},
                                          {"pid": 30, "pgid": 30, "name": "old-r0", "group": "old"},
                                          {"pid": 5, "pgid": 5, "name": "launcher-agent", "group": "launcher-agent"}]})
    rows = _host_rows(progs, "n0", st, {"a": GangRecord(state="FAILED", reason="r")}, {}, "g")
    r0, r1, old = rows
    assert (r0.state, r0.pid, r0.drift[0].kind, r0.drift[0].pids) == ("ORPHANED", 8, DriftKind.ORPHANED, (8,))
    assert (r1.state, r1.pid) == ("FAILED", None)
    assert (old.program, old.state, old.pid, old.in_plan) == ("old-r0", "ORPHANED", 30, False)
    assert len(rows) == 3  # the dead supervisord's agent is not a row


def test_a_snapshot_without_the_container_of_a_running_program_is_not_trusted():
    # the agent writes the snapshot when the runner starts; its container comes a moment later
    manifest = {"programs": [{"name": "demo-r0", "container": "al-t-h1-demo-r0-abcdef", "engine": "podman"}]}
    alive = proc("7 " + stat(7, "S", 500), "41 " + stat(41, "S", 1000))
    assert verified_snapshot({**SNAP, "manifest": manifest}, alive) is None
    boxed = {**SNAP, "manifest": manifest,
             "programs": [{**SNAP["programs"][0], "container": {"id": "3f2a9c1d0b4e", "state": "running"}},
                          SNAP["programs"][1]]}
    got = verified_snapshot(boxed, alive)
    assert got is not None and got["programs"][0]["container"]["id"] == "3f2a9c1d0b4e"
