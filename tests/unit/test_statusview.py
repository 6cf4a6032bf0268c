"""How `status` shows readiness and a gang's wait (launcher/cli/statusview.py), from records."""
from __future__ import annotations

import time

from launcher.deploy.records import Detail, Drift, DriftKind, StatusRow
from launcher.cli.statusview import fmt_since, state_cell, status_json, status_table

REFUSED = "http http://10.0.0.1:8000/health: URLError: <urlopen error [Errno 111] Connection refused>"


def at(hms: str, day: int = 7) -> float:
    h, m, s = map(int, hms.split(":"))
    return time.mktime((2026, 12, day, h, m, s, 0, 0, -1))  # the operator's local time


def test_a_running_program_whose_probe_fails_is_not_plain_running():
    hung = StatusRow("serve", "n0", None, "serve", "RUNNING", pid=7, uptime=90.0, generation="g1",
                     desired_generation="g1", detail=Detail(), ready=False, probe_error=REFUSED)
    ok = StatusRow("serve", "n1", None, "serve", "RUNNING", pid=8, uptime=90.0, generation="g1",
                   desired_generation="g1", detail=Detail(), ready=True)
    unprobed = StatusRow("demo", "n1", 0, "demo-r0", "RUNNING", pid=9, detail=Detail())
    assert state_cell(hung) == f"RUNNING (not ready: {REFUSED})"
    assert state_cell(ok) == state_cell(unprobed) == "RUNNING"
    assert f"RUNNING (not ready: {REFUSED})" in status_table([hung, ok])
    assert (status_json(hung)["ready"], status_json(hung)["probe_error"]) == (False, REFUSED)
    assert status_json(hung)["state"] == "RUNNING"  # the state is supervisord's; readiness is beside it
    assert (status_json(ok)["ready"], status_json(unprobed)["ready"]) == (True, None)
    old = StatusRow("serve", "n0", None, "serve", "RUNNING", pid=7, detail=Detail(stale=True), ready=False,
                    probe_error="tcp 10.0.0.1:9000: timed out")
    assert state_cell(old) == "RUNNING (old config; not ready: tcp 10.0.0.1:9000: timed out)"


def test_a_waiting_gang_names_what_it_waits_for_why_and_since_when():
    why = "member n1 (10.0.0.2) unreachable: timed out; the gang restarts when it answers again"
    row = StatusRow("demo", "n0", 0, "demo-r0", "WAITING", generation="g1", desired_generation="g1",
                    drift=(Drift(DriftKind.WAITING, why=why, on=("n1",)),), waiting_on=("n1",),
                    waiting_since=at("12:01:05"), detail=Detail(reason=why))
    now = at("12:30:00")
    assert fmt_since(at("12:01:05"), now) == "12:01:05"
    assert fmt_since(at("23:59:59", day=6), now) == "2026-12-06 23:59:59"  # another day: with its date
    cell = state_cell(row)
    assert cell == f"WAITING (n1) since {fmt_since(at('12:01:05'))}: {why}"
    assert cell in status_table([row])
    doc = status_json(row)
    assert doc["reason"] == why
    assert doc["waiting"] == {"on": ["n1"], "since": at("12:01:05"), "since_text": fmt_since(at("12:01:05")),
                              "reason": why}
    # a wait recorded before `since` was kept still shows what it waits for and why
    older = StatusRow("b", "n0", 0, "b-r0", "WAITING", drift=(Drift(DriftKind.WAITING, why="a not ready", on=("a",)),),
                      waiting_on=("a",), detail=Detail())
    assert state_cell(older) == "WAITING (a): a not ready"
    assert status_json(older)["waiting"]["since"] is None
    assert status_json(StatusRow("a", "n0", 0, "a-r0", "RUNNING", detail=Detail()))["waiting"] is None
