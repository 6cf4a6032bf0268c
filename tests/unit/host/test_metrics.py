"""/metrics from a host's state files: values per gang and program, the text format (checked by
Prometheus' own `promtool check metrics`), restart causes, and program_stats' restarts and signals."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from launcher.host import metrics, program_stats

DOCS = Path(__file__).resolve().parents[3] / "docs" / "METRICS.md"
NOW = 1_700_000_000.0


def conf() -> dict:
    members = [{"host": "h1", "address": "10.0.0.1"}, {"host": "h2", "address": "10.0.0.2"}]
    return {"deployment": "d", "host": "h1", "restart_max": 3, "restart_window": 600.0,
            "gangs": {g: {"kind": "rank", "leader": "h1", "members": members}
                      for g in ("ok", "bad", "held", "again", "old")} | {
                "theirs": {"kind": "rank", "leader": "h2", "members": members}}}


def snapshot() -> dict:
    def prog(name: str, group: str, state: str, start: float, code: int = 0) -> dict:
        return {"name": name, "group": group, "state": state, "pid": 10 if state == "RUNNING" else None,
                "exitstatus": code, "start": start}
    return {
        "generation": "g2", "supervisord": True, "time": NOW - 1,
        "manifest": {"programs": [{"name": "ok-r0", "owner": "ok", "rank": 0, "owner_hash": "a"},
                                  {"name": "bad-r0", "owner": "bad", "rank": 0, "owner_hash": "b"},
                                  {"name": "old-r0", "owner": "old", "rank": 0, "owner_hash": "new"}]},
        "programs": [prog("launcher-agent", "launcher-agent", "RUNNING", NOW - 100),
                     prog("ok-r0", "ok", "RUNNING", NOW - 50), prog("bad-r0", "bad", "EXITED", NOW - 70, 3),
                     prog("old-r0", "old", "RUNNING", NOW - 900), prog("stray", "stray", "RUNNING", NOW - 5)],
        "gang": {"ok": {"state": "RUNNING", "restarts": 2, "causes": {"signal": 1, "supervisord": 1},
                        "history": [NOW - 700, NOW - 60], "last_restart": NOW - 60},
                 "bad": {"state": "FAILED", "restarts": 3, "history": [NOW - 3, NOW - 2, NOW - 1]},
                 "again": {"state": "RESTARTING", "restarts": 0, "history": []}},
        "started": {"ok": {"generation": "g2", "owner_hash": "a"}, "old": {"generation": "g1", "owner_hash": "old"}},
        "waiting": {"held": {"on": ["h2"], "reason": "member h2 unreachable", "since": NOW - 9,
                             "report": {"program": "held-r1"}},
                    "theirs": {"on": ["h2"], "reason": "cannot report", "since": NOW, "kind": "reporting"}},
        "orphans": [{"pid": 99, "name": "x"}]}


def values(text: str) -> dict[str, float]:
    """'name{labels}' (labels as rendered, minus deployment and host) -> value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series.replace('deployment="d",host="h1",', "").replace('{deployment="d",host="h1"}', "")] = \
                float(value)
    return out


@pytest.fixture
def rendered() -> str:
    want = {"ok": True, "bad": True, "held": True, "again": True, "old": True}
    stats = {"ok-r0": {"restarts": 2, "start": NOW - 50, "exit_code": -1, "exit_signal": 9},
             "bad-r0": {"restarts": 3, "start": NOW - 70, "exit_code": 3, "exit_signal": 0}}
    return metrics.exposition(metrics.samples(conf(), snapshot(), want, stats, 1, 2, NOW),
                              {"deployment": "d", "host": "h1"})


def test_gang_and_program_facts(rendered):
    v = values(rendered)
    m = "ascend_launcher_"
    for gang, state in {"ok": "running", "bad": "failed", "held": "waiting", "again": "restarting"}.items():
        assert [s for s in metrics.GANG_STATES if v[f'{m}gang_state{{gang="{gang}",state="{s}"}}'] == 1] == [state]
    assert f'{m}gang_state{{gang="theirs",state="running"}}' not in v  # its leader, h2, says
    assert v[f'{m}gang_restarts_total{{gang="ok",cause="signal"}}'] == 1
    assert v[f'{m}gang_restarts_total{{gang="ok",cause="supervisord"}}'] == 1
    assert v[f'{m}gang_restarts_total{{gang="ok",cause="exit"}}'] == 0
    assert v[f'{m}gang_restarts_total{{gang="bad",cause="unknown"}}'] == 3  # a record without causes
    assert v[f'{m}gang_restart_budget_remaining{{gang="ok"}}'] == 2  # one restart left the window
    assert v[f'{m}gang_restart_budget_remaining{{gang="bad"}}'] == 0
    assert v[f'{m}gang_last_restart_timestamp_seconds{{gang="ok"}}'] == NOW - 60
    assert v[f'{m}gang_members_unreachable{{gang="held"}}'] == 1
    assert v[f'{m}gang_members_unreachable{{gang="ok"}}'] == 0
    assert v[f'{m}gang_generation_info{{gang="ok",generation="g2"}}'] == 1
    assert v[f'{m}gang_generation_info{{gang="old",generation="g1"}}'] == 1
    assert v[f'{m}program_up{{gang="ok",program="ok-r0",rank="0"}}'] == 1
    assert v[f'{m}program_up{{gang="bad",program="bad-r0",rank="0"}}'] == 0
    assert v[f'{m}program_start_time_seconds{{gang="ok",program="ok-r0",rank="0"}}'] == NOW - 50
    assert v[f'{m}program_restarts_total{{gang="bad",program="bad-r0",rank="0"}}'] == 3
    assert v[f'{m}program_last_exit_code{{gang="ok",program="ok-r0",rank="0"}}'] == -1
    assert v[f'{m}program_last_exit_signal{{gang="ok",program="ok-r0",rank="0"}}'] == 9
    assert v[f'{m}program_last_exit_code{{gang="bad",program="bad-r0",rank="0"}}'] == 3
    assert v[f'{m}program_restarts_total{{gang="stray",program="stray"}}'] == 0
    assert not any("launcher-agent" in k for k in v)
    assert v[f'{m}drift_programs{{kind="old_config"}}'] == 1
    assert v[f'{m}drift_programs{{kind="not_in_plan"}}'] == 1
    assert v[f'{m}drift_programs{{kind="orphaned"}}'] == 1
    assert v[f'{m}generation_info{{generation="g2"}}'] == 1
    assert v[f"{m}supervisord_up"] == 1
    assert v[f"{m}agent_reports_pending"] == 2  # one queued in the agent, one a member still reports
    assert v[f"{m}agent_tasks_running"] == 2


def test_every_series_is_of_a_documented_metric_with_help_and_type(rendered):
    names = {line.split("{")[0] for line in rendered.splitlines() if line and not line.startswith("#")}
    assert names == set(metrics.METRICS)
    for name, (kind, _) in metrics.METRICS.items():
        assert f"# TYPE {name} {kind}\n" in rendered
        assert name.endswith("_total") == (kind == "counter")
    documented = set(re.findall(r"^\| `(ascend_launcher_[a-z_]+)`", DOCS.read_text(), re.M))
    assert documented == set(metrics.METRICS)


def test_label_values_are_escaped():
    text = metrics.exposition([("ascend_launcher_program_up", {"program": 'a"b\\c\nd'}, 1)], {})
    assert 'program="a\\"b\\\\c\\nd"' in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian's prometheus package)")
def test_promtool_finds_nothing_wrong_with_the_exposition(rendered):
    proc = subprocess.run(["promtool", "check", "metrics"], input=rendered, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_restart_causes_are_a_fixed_set():
    assert metrics.restart_cause({"start": NOW, "exitstatus": -1}) == "signal"
    assert metrics.restart_cause({"start": NOW, "exitstatus": 1}) == "exit"
    assert metrics.restart_cause({"start": 0, "exitstatus": 0}) == "supervisord"
    assert metrics.restart_cause(None) == "restart_with"
    assert set(metrics.CAUSES) == {"exit", "signal", "supervisord", "restart_with"}
    assert metrics.counted({"causes": {"exit": 2}}, "signal") == {"exit": 2, "signal": 1}


def test_program_stats_count_restarts_and_read_the_signal(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "supervisord.log"
    p = {"name": "r0", "group": "g", "state": "RUNNING", "exitstatus": 0, "start": 100}
    program_stats.observe(str(tmp_path), [p])
    program_stats.observe(str(tmp_path), [p])  # the same run: nothing new
    assert program_stats.read_stats(str(tmp_path))["r0"]["restarts"] == 0
    log.write_text("2024-01-01 00:00:00,000 WARN exited: r0 (terminated by SIGKILL; not expected)\n")
    program_stats.observe(str(tmp_path), [{**p, "state": "EXITED", "exitstatus": -1}])
    program_stats.observe(str(tmp_path), [{**p, "start": 200}])
    rec = program_stats.read_stats(str(tmp_path))["r0"]
    assert (rec["restarts"], rec["exit_code"], rec["exit_signal"]) == (1, -1, 9)
    program_stats.observe(str(tmp_path), [{**p, "start": 200, "state": "EXITED", "exitstatus": 4}])
    rec = program_stats.read_stats(str(tmp_path))["r0"]
    assert (rec["restarts"], rec["exit_code"], rec["exit_signal"]) == (1, 4, 0)
    program_stats.observe(str(tmp_path), [{**p, "start": 300}, {**p, "name": "a", "group": "launcher-agent"}])
    assert set(program_stats.read_stats(str(tmp_path))) == {"r0"}
    assert json.loads((tmp_path / "state" / "program-stats.json").read_text())["r0"]["restarts"] == 2


def test_render_reads_the_host_files(tmp_path):
    (tmp_path / "state").mkdir()
    gen = tmp_path / "gens" / "g2"
    gen.mkdir(parents=True)
    (tmp_path / "current").symlink_to(gen)
    (gen / "gang.json").write_text(json.dumps(conf()))
    (tmp_path / "state" / "snapshot.json").write_text(json.dumps(snapshot()))
    (tmp_path / "state" / "desired.json").write_text(json.dumps({"ok": True}))
    v = values(metrics.render(str(tmp_path), 0, 0))
    assert v['ascend_launcher_gang_state{gang="ok",state="running"}'] == 1
    assert v['ascend_launcher_gang_state{gang="held",state="waiting"}'] == 1
    assert v['ascend_launcher_snapshot_timestamp_seconds'] == NOW - 1
    assert time.time() > NOW
