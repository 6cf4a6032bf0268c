"""The CLI as a user meets it: outputs, exit codes, and refusing bad input without side effects."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import CONFIGS, ROOT, run_cli, write

PD = str(CONFIGS / "pd-1p1d-tp2.yaml")
ATB = str(CONFIGS / "mindie-atb-2x4.yaml")


def test_schema_is_printed_and_is_json_schema():
    run = run_cli("schema")
    assert run.code == 0
    doc = json.loads(run.out)
    assert doc["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert {"hosts", "instances", "services", "pd_groups", "llm_datadist", "defaults"} <= set(doc["properties"])


def test_plan_table_lists_every_rank():
    run = run_cli("plan", ATB)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("deployment mindie-atb-2x4  generation ")
    header = next(ln for ln in lines if ln.startswith("HOST"))
    assert header.split() == ["HOST", "OWNER", "ROLE", "RANK", "LOCAL", "DEVICE", "DEVICE_IP", "PROGRAM"]
    rows = [ln.split() for ln in lines[lines.index(header) + 1:]]
    assert [r[3] for r in rows] == [str(i) for i in range(8)]
    assert rows[4][:7] == ["huawei91", "llama2-70b", "standalone", "4", "0", "0", "10.10.100.22"]


def test_plan_json_generation_matches_render(tmp_path):
    plan = run_cli("plan", ATB, "--json").json()
    run = run_cli("render", ATB, "-o", str(tmp_path / "out"))
    assert f"rendered generation {plan['generation']}:" in run.out


def test_render_refuses_a_non_empty_directory_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = run_cli("render", ATB, "-o", str(out))
    assert run.code == 2
    assert "not an empty directory" in run.err
    assert os.listdir(out) == ["keep.txt"]


def test_render_with_bad_topology_writes_nothing(tmp_path):
    bad = write(tmp_path, "version: 1\nname: x\nhosts: []\n")
    out = tmp_path / "out"
    run = run_cli("render", bad, "-o", str(out))
    assert run.code == 2
    assert "hosts: must not be empty" in run.err
    assert not out.exists()


def test_ranktable_needs_instance_when_there_are_several():
    run = run_cli("ranktable", PD)
    assert run.code == 2
    assert "use --instance NAME or --global" in run.err
    run = run_cli("ranktable", PD, "--instance", "nope")
    assert run.code == 2 and "no instance 'nope' (instances: prefill-0, decode-0)" in run.err
    run = run_cli("ranktable", ATB, "--global")
    assert run.code == 2 and "has no pd_groups" in run.err


def test_pd_merge_of_two_hosts_tables(tmp_path):
    # Two hosts' tables as seed 002's gen writes them: the API entry host holds the scheduler.
    sched = {"server_id": "10.0.0.1", "server_ip": "10.0.0.1"}

    def table(prefill, decode):
        return {"version": "1.0", "status": "completed", "server_group_list": [
            {"group_id": "0", "server_count": "1", "server_list": [sched]},
            {"group_id": "1", "server_count": str(len(prefill)), "server_list": prefill},
            {"group_id": "2", "server_count": str(len(decode)), "server_list": decode}]}

    def server(ip, dev):
        return {"server_id": ip, "server_ip": ip,
                "device": [{"device_id": str(dev), "device_ip": f"29.0.0.{dev}", "rank_id": "0"}]}

    a = tmp_path / "global_ranktable_10.0.0.1.json"
    b = tmp_path / "global_ranktable_10.0.0.2.json"
    a.write_text(json.dumps(table([server("10.0.0.1", 0)], [])))
    b.write_text(json.dumps(table([], [server("10.0.0.2", 1)])))
    run = run_cli("pd-ranktable", "merge", str(a), str(b), "--save-dir", str(tmp_path / "save"))
    assert run.code == 0, run.err
    merged = json.loads((tmp_path / "save" / "global_ranktable_merge.json").read_text())
    groups = merged["server_group_list"]
    assert [g["group_id"] for g in groups] == ["0", "1", "2"]
    assert groups[0]["server_list"] == [sched]
    assert groups[1]["server_list"] == [server("10.0.0.1", 0)] and groups[1]["server_count"] == "1"
    assert groups[2]["server_list"] == [server("10.0.0.2", 1)]


def test_pd_merge_rejects_two_schedulers_and_bad_json(tmp_path):
    def table(sid):
        return {"server_group_list": [{"group_id": "0", "server_list": [{"server_id": sid, "server_ip": sid}]},
                                      {"group_id": "1", "server_list": []}, {"group_id": "2", "server_list": []}]}
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(table("x")))
    b.write_text(json.dumps(table("y")))
    c.write_text("{not json")
    run = run_cli("pd-ranktable", "merge", str(a), str(b))
    assert run.code == 2 and "exactly one scheduler (group 0), found 2: ['x', 'y']" in run.err
    run = run_cli("pd-ranktable", "merge", str(a), str(c))
    assert run.code == 2 and f"{c}:1:2: not JSON" in run.err


def test_validate_json_output():
    run = run_cli("validate", str(CONFIGS / "yuanrong-rh2d.yaml"), "--json")
    assert run.json() == {"file": str(CONFIGS / "yuanrong-rh2d.yaml"), "ok": True, "hosts": 2, "instances": 2,
                          "ranks": 2, "service_processes": 3, "warnings": []}


def test_console_script_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "launcher", "validate", "configs/demo-local.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "configs/demo-local.yaml: ok" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "launcher", "frobnicate"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_validate_json_reports_errors_as_data(tmp_path):
    bad = write(tmp_path, "version: 1\nname: x\nhosts:\n  - {name: a, address: b, colour: red}\n")
    run = run_cli("validate", bad, "--json")
    assert run.code == 2
    doc = run.json()
    assert doc["ok"] is False
    assert doc["diagnostics"] == [{"severity": "error", "file": bad, "line": 4, "col": 27, "path": "hosts[0].colour",
                                   "message": "unknown key 'colour' (allowed: address, chips_per_card, container_ip, dcmi_lib, "
                                              "deploy_dir, devices, hccn_tool, name, nic, server_id, ssh, super_pod_id, "
                                              "transport)"}]


def test_preflight_checks_cover_worlds_and_datadist_links():
    from launcher.core import preflight
    from launcher.deploy.files import compile_file
    plan = compile_file(str(CONFIGS / "llm-datadist-link.yaml")).plan
    checks = preflight.checks_for(plan)
    # four one-NPU worlds: device checks, no pings (a world on one host uses HCCS)
    assert [(c.instance, c.host, c.spec["peers"]) for c in checks if c.link is None] == [
        ("prompt-0", "node-p", []), ("prompt-1", "node-p", []), ("decoder-0", "node-d", []),
        ("decoder-1", "node-d", [])]
    # each decoder device pings the listen IP of every prompt cluster of each of its links
    links = sorted((c.link, c.host, c.spec["devices"][0]["ip"], tuple(c.spec["peers"])) for c in checks if c.link)
    assert links == [("pd_comm_1_3", "node-d", "10.30.1.10", ("10.30.0.10",)),
                     ("pd_comm_1_4", "node-d", "10.30.1.11", ("10.30.0.10",)),
                     ("pd_comm_2_3", "node-d", "10.30.1.10", ("10.30.0.11",)),
                     ("pd_comm_2_4", "node-d", "10.30.1.11", ("10.30.0.11",))]
    two_hosts = compile_file(str(CONFIGS / "mindie-atb-2x8.yaml")).plan
    specs = preflight.checks_for(two_hosts)
    assert len(specs) == 2 and all(len(c.spec["peers"]) == 16 for c in specs)  # the checker skips its own IP


def test_status_rows_are_formatted_from_records_with_the_same_keys_and_sentences():
    from launcher.cli.statusview import drift_lines as _drift_lines, state_cell as _state_cell, \
        status_json as _status_json
    from launcher.deploy.records import Detail, Drift, DriftKind, StatusRow
    base = ["instance", "host", "rank", "program", "state", "pid", "uptime", "restarts", "generation", "in_plan",
            "drift", "waiting_on", "orphan_pids", "container", "ready", "probe_error", "waiting"]
    gen = Drift(DriftKind.GENERATION, runs=None, wants="g2")
    old = Drift(DriftKind.OLD_CONFIG, runs="g0", wants="g1")
    wait = Drift(DriftKind.WAITING, why="etcd not ready: refused", on=("etcd",))
    planned = StatusRow("a", "n0", 0, "a-r0", "RUNNING", pid=7, uptime=1.5, restarts=2, generation="g1",
                        drift=(gen, old, wait), waiting_on=("etcd",), desired_generation="g2",
                        detail=Detail(started_generation="g0", stale=True, exitstatus=0, reason=None, last_log=()))
    cut = StatusRow("a", "n1", 1, "a-r1", "UNREACHABLE", desired_generation="g2",
                    drift=(Drift(DriftKind.UNREACHABLE, why="ssh to 10.0.0.2: timed out"),))
    extra = StatusRow("old", "n0", None, "old-r0", "RUNNING", pid=9, uptime=3.0, generation="g1", in_plan=False,
                      desired_generation="g2", drift=(Drift(DriftKind.NOT_IN_PLAN, program="old-r0", state="RUNNING"),))
    j = _status_json(planned)
    assert list(j) == base + ["started_generation", "stale", "exitstatus", "reason", "last_log", "desired_generation"]
    assert j["drift"] == ["host runs generation none; the topology renders g2",
                          "runs the config of generation g0; generation g1 changed it (not restarted yet)",
                          "waits for etcd: etcd not ready: refused"]
    assert (j["waiting_on"], j["stale"], j["last_log"], j["desired_generation"]) == (["etcd"], True, [], "g2")
    assert list(_status_json(cut)) == list(_status_json(extra)) == base + ["desired_generation"]
    assert _status_json(cut)["drift"] == ["unreachable: ssh to 10.0.0.2: timed out"]
    assert _status_json(extra)["drift"] == ["old-r0 is not in the plan (RUNNING)"]
    # what is about a whole host is said once per host; the rest names the owner
    assert _drift_lines([planned, planned, cut, extra]) == [
        "n0: host runs generation none; the topology renders g2",
        "n0: a: runs the config of generation g0; generation g1 changed it (not restarted yet)",
        "n0: a: waits for etcd: etcd not ready: refused",
        "n1: unreachable: ssh to 10.0.0.2: timed out",
        "n0: old: old-r0 is not in the plan (RUNNING)"]
    assert [_state_cell(r) for r in (planned, cut, extra)] == ["RUNNING (old config)", "UNREACHABLE",
                                                              "RUNNING (not in plan)"]
    # supervisord gone, the rank not: it says so, with the pids that still run
    orphaned = StatusRow("a", "n2", 2, "a-r2", "ORPHANED", pid=41, generation="g1", desired_generation="g1",
                         drift=(Drift(DriftKind.ORPHANED, program="a-r2", pids=(41, 43)),), detail=Detail())
    assert _state_cell(orphaned) == "ORPHANED (supervisord down)"
    assert _status_json(orphaned)["orphan_pids"] == [41, 43]
    assert _drift_lines([orphaned]) == ["n2: a: supervisord is down; a-r2 still runs unsupervised (pids 41, 43); "
                                        "`up` stops it and restarts its gang"]


def test_status_shows_the_container_of_each_rank_and_a_container_nothing_supervises():
    from launcher.deploy.records import Drift, DriftKind, StatusRow
    from launcher.cli.statusview import drift_lines, state_cell, status_json, status_table
    boxed = StatusRow("a", "n0", 0, "a-r0", "RUNNING", pid=7, container="3f2a9c1d0b4e", container_state="running")
    left = StatusRow("a", "n1", 1, "a-r1", "ORPHANED", pid=41, container="9e8d7c6b5a43", container_state="running",
                     drift=(Drift(DriftKind.ORPHANED, program="a-r1", pids=(41,), container="9e8d7c6b5a43"),))
    table = status_table([boxed, left])
    assert table.splitlines()[0].split()[-1] == "CONTAINER"
    assert "3f2a9c1d0b4e (running)" in table
    assert state_cell(left) == "ORPHANED (container 9e8d7c6b5a43 unsupervised)"
    assert drift_lines([left]) == ["n1: a: container 9e8d7c6b5a43 of a-r1 runs with nothing supervising it (pid 41); "
                                   "`up` removes it and restarts its gang"]
    assert status_json(boxed)["container"] == {"id": "3f2a9c1d0b4e", "state": "running"}
    host_only = StatusRow("a", "n0", 0, "a-r0", "RUNNING", pid=7)
    assert "CONTAINER" not in status_table([host_only]) and status_json(host_only)["container"] is None


def test_every_json_command_that_fails_answers_with_a_json_error_and_its_exit_code(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    bad = write(tmp_path, "version: 1\nname: x\nhosts:\n  - {name: a, address: b, colour: red}\n")
    cases = [
        (("status", missing, "--json"), missing),                                # an unreadable file
        (("plan", bad, "--json"), "unknown key 'colour'"),                          # a bad topology
        (("up", str(CONFIGS / "demo-local.yaml"), "--json", "--forks", "0"), "--forks must be at least 1"),
        (("restart", str(CONFIGS / "demo-local.yaml"), "--json", "--strategy", "x"), "unrecognized arguments"),
        (("up", str(CONFIGS / "demo-local.yaml"), "--json", "--strategy", "x"), "argument --strategy: invalid choice"),
    ]
    for argv, said in cases:
        run = run_cli(*argv)
        assert run.code == 2, (argv, run.err)
        doc = json.loads(run.out)  # one JSON document on stdout, nothing else
        assert doc["ok"] is False and doc["exit"] == 2 and said in doc["error"], (argv, doc)
        assert run.err  # people still read the error on stderr
    assert json.loads(run_cli("plan", bad, "--json").out)["diagnostics"][0].startswith(f"{bad}:4:27: error")
    # without --json, stdout stays empty
    assert run_cli("status", missing).out == ""
