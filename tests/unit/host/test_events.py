"""The host's event journal: each change between snapshots becomes one event, once; bounded size;
read back by time."""
from __future__ import annotations

import json

from launcher.host import events


def root_with_logs(tmp_path):
    for d in ("state", "logs"):
        (tmp_path / d).mkdir()
    return str(tmp_path)


def state(t: float, programs=(), gang=None, waiting=None, orphans=(), generation="g1", supervisord=True) -> dict:
    return {"time": t, "generation": generation, "supervisord": supervisord, "programs": list(programs),
            "gang": gang or {}, "waiting": waiting or {}, "orphans": [{"pid": p} for p in orphans]}


def prog(state_: str, start: float, code: int = 0, name: str = "demo-r0") -> dict:
    return {"name": name, "group": "demo", "state": state_, "start": start, "pid": 42, "exitstatus": code}


def kinds(root: str) -> list[tuple[str, str]]:
    return [(e["kind"], e["message"]) for e in events.read(root, 0)]


def test_a_kill_and_the_gang_restart_as_a_timeline(tmp_path):
    root = root_with_logs(tmp_path)
    (tmp_path / "logs" / "demo-r0.log").write_text("serving\nstill serving\n")
    (tmp_path / "logs" / "supervisord.log").write_text("x WARN exited: demo-r0 (terminated by SIGKILL; not expected)\n")
    events.observe(root, state(10, [prog("RUNNING", 5)]))
    events.observe(root, state(11, [prog("RUNNING", 5)]))  # nothing changed: nothing new
    events.observe(root, state(20, [prog("EXITED", 5, -1)]))
    rec = {"state": "RESTARTING", "restarts": 0, "reason": "rank program demo-r0 on h1 was killed by a signal",
           "backoff": 0}
    events.observe(root, state(21, [prog("EXITED", 5, -1)], gang={"demo": rec}))
    events.observe(root, state(23, [prog("RUNNING", 22)], gang={"demo": {**rec, "state": "RUNNING", "restarts": 1,
                                                                        "last_restart": 22.5}}))
    got = events.read(root, 0)
    assert [e["kind"] for e in got] == ["start", "exit", "gang_restarting", "start", "gang_restarted"]
    start, death, restarting, again, restarted = got
    assert start["time"] == 5 and start["program"] == "demo-r0" and start["host"] == tmp_path.name
    assert death["signal"] == 9 and death["exit_code"] == -1 and death["log"] == ["serving", "still serving"]
    assert "killed by signal 9" in death["message"]
    assert restarting["cause"] == rec["reason"] and "at once" in restarting["message"]
    assert again["time"] == 22
    assert restarted["restarts"] == 1 and restarted["time"] == 22.5 and rec["reason"] in restarted["message"]
    assert [e["kind"] for e in events.read(root, 21.9)] == ["start", "gang_restarted"]


def test_failed_waits_switches_orphans_and_supervisord(tmp_path):
    root = root_with_logs(tmp_path)
    events.observe(root, state(1))
    wait = {"on": ["h2"], "reason": "member h2 unreachable", "since": 2.0}
    events.observe(root, state(3, waiting={"demo": wait}))
    events.observe(root, state(4))
    events.observe(root, state(5, gang={"demo": {"state": "FAILED", "restarts": 3, "reason": "exit 1",
                                                 "failed_at": 4.5}}))
    events.observe(root, state(6, generation="g2", supervisord=False, orphans=[77]))
    events.observe(root, state(7, generation="g2"))
    assert [k for k, _ in kinds(root)] == ["wait", "wait_over", "gang_failed", "switch", "supervisord", "orphans",
                                           "supervisord", "orphans_gone"]
    got = {e["kind"]: e for e in events.read(root, 0)}
    assert got["wait"]["time"] == 2.0 and got["wait"]["on"] == ["h2"]
    assert got["gang_failed"]["time"] == 4.5 and got["gang_failed"]["message"] == "gang demo FAILED: exit 1"
    assert got["switch"]["from"] == "g1" and got["switch"]["to"] == "g2"
    assert got["orphans"]["pids"] == [77]


def test_the_journal_is_bounded_and_kept_across_rotation(tmp_path, monkeypatch):
    root = root_with_logs(tmp_path)
    monkeypatch.setattr(events, "MAX_BYTES", 2000)
    for i in range(200):
        events.note(root, "leftovers", f"event {i}")
    files = [tmp_path / "logs" / "events.jsonl", tmp_path / "logs" / "events.jsonl.1"]
    assert all(f.stat().st_size < 2000 + 200 for f in files)
    got = [e["message"] for e in events.read(root, 0)]
    assert got[-1] == "event 199" and got == sorted(got, key=lambda m: int(m.split()[1]))
    assert len(got) < 200  # the oldest went with the second rotation
    assert all(json.loads(line) for line in files[0].read_text().splitlines())


def test_a_state_read_before_the_last_journaled_one_adds_nothing(tmp_path):
    """The agent's poll may write the snapshot it read after a restart thread wrote a newer one:
    going back to the older view would journal the newer facts twice."""
    root = root_with_logs(tmp_path)
    events.observe(root, state(10, [prog("RUNNING", 5)]))
    restarting = {"demo": {"state": "RESTARTING", "restarts": 0, "reason": "r", "backoff": 0}}
    events.observe(root, state(12, [prog("RUNNING", 5)], gang=restarting))
    events.observe(root, state(11, [prog("RUNNING", 5)]))  # read at 11, written last
    events.observe(root, state(13, [prog("RUNNING", 5)], gang=restarting))
    assert [k for k, _ in kinds(root)] == ["start", "gang_restarting"]
