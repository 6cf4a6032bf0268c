"""The seed documents' examples, reproduced exactly by the example topologies.

The expected JSON below is typed from the seeds (shared/seeds/004, 002), not from our output.
"""
from __future__ import annotations

import json

from tests.helpers import CONFIGS, run_cli

SEED_004 = json.loads("""
{ "server_count":"2", "server_list": [ { "device":[ { "device_id":"0", "device_ip":"10.10.100.10", "rank_id":"0" },
{ "device_id":"1", "device_ip":"10.10.100.11", "rank_id":"1" }, { "device_id":"2", "device_ip":"10.10.100.12",
"rank_id":"2" }, { "device_id":"3", "device_ip":"10.10.100.13", "rank_id":"3" }], "server_id":"90.90.152.89" },
{ "device":[ { "device_id":"0", "device_ip":"10.10.100.22", "rank_id":"4" }, { "device_id":"1",
"device_ip":"10.10.100.23", "rank_id":"5" }, { "device_id":"2", "device_ip":"10.10.100.24", "rank_id":"6" },
{ "device_id":"3", "device_ip":"10.10.100.25", "rank_id":"7" } ], "server_id":"90.90.152.91" } ],
"status":"completed", "version":"1.0" }
""")

# Seed 002, with its masked IPs made concrete (10.**.**.22 -> 10.0.0.22, 29.**.**.56 -> 29.0.0.56, ...).
SEED_002_GLOBAL = json.loads("""
{ "version": "1.0", "status": "completed", "server_group_list": [ { "group_id": "0", "server_count": "1",
"server_list": [ { "server_id": "localhost", "server_ip": "localhost" } ] }, { "group_id": "1", "server_count": "1",
"server_list": [ { "server_id": "localhost", "server_ip": "localhost", "device": [ { "device_id": "4",
"device_ip": "10.0.0.22", "rank_id": "0" }, { "device_id": "5", "device_ip": "10.0.0.23", "rank_id": "1" } ] } ] },
{ "group_id": "2", "server_count": "1", "server_list": [ { "server_id": "localhost", "server_ip": "localhost",
"device": [ { "device_id": "6", "device_ip": "29.0.0.56", "rank_id": "0" }, { "device_id": "7",
"device_ip": "29.0.0.72", "rank_id": "1" } ] } ] } ] }
""")

SEED_002_LOCAL_DECODE = json.loads("""
{ "version": "1.0", "status": "completed", "group_id": "0", "server_count": "1", "server_list": [ {
"server_id": "localhost", "server_ip": "localhost", "device": [ { "device_id": "6", "device_ip": "29.0.0.56",
"rank_id": "0" }, { "device_id": "7", "device_ip": "29.0.0.72", "rank_id": "1" } ] } ] }
""")


def test_seed_004_two_server_ranktable_is_reproduced_exactly():
    run = run_cli("ranktable", str(CONFIGS / "mindie-atb-2x4.yaml"))
    assert run.code == 0, run.err
    assert run.json() == SEED_004
    # Key order as in the seed, too: a diff against the vendor example shows nothing.
    assert list(run.json()) == list(SEED_004)
    assert list(run.json()["server_list"][0]) == ["device", "server_id"]


def test_seed_002_global_and_local_ranktables_are_reproduced_exactly():
    cfg = str(CONFIGS / "pd-1p1d-tp2.yaml")
    glob = run_cli("ranktable", cfg, "--global")
    assert glob.code == 0, glob.err
    assert glob.json() == SEED_002_GLOBAL
    assert json.dumps(glob.json()) == json.dumps(SEED_002_GLOBAL)  # key order too
    local = run_cli("ranktable", cfg, "--instance", "decode-0")
    assert local.json() == SEED_002_LOCAL_DECODE
    prefill = run_cli("ranktable", cfg, "--instance", "prefill-0").json()
    assert prefill["group_id"] == "0"
    assert [d["device_id"] for d in prefill["server_list"][0]["device"]] == ["4", "5"]
    assert [d["rank_id"] for d in prefill["server_list"][0]["device"]] == ["0", "1"]


def test_seed_002_file_names(tmp_path):
    out = tmp_path / "out"
    run = run_cli("render", str(CONFIGS / "pd-1p1d-tp2.yaml"), "-o", str(out))
    assert run.code == 0, run.err
    names = sorted(p.name for p in (out / "localhost" / "ranktables").iterdir())
    assert names == ["global_ranktable_10.0.0.18.json", "local_ranktable_10.0.0.18_45.json",
                     "local_ranktable_10.0.0.18_67.json", "local_ranktable_10.0.0.18_host.json"]
    on_disk = json.loads((out / "localhost/ranktables/global_ranktable_10.0.0.18.json").read_text())
    assert on_disk == SEED_002_GLOBAL


def test_seed_004_sixteen_ranks_env_and_launch_command():
    run = run_cli("plan", str(CONFIGS / "mindie-atb-2x8.yaml"), "--json")
    assert run.code == 0, run.err
    plan = run.json()
    programs = [p for h in plan["hosts"] for p in h["programs"]]
    assert [p["rank"] for p in programs] == list(range(16))
    for p in programs:
        env = p["env"]
        host = "huawei89" if p["rank"] < 8 else "huawei91"
        table = f"/var/lib/ascend-launcher/mindie-atb-2x8/{host}/current/ranktables/llama2-70b.json"
        assert env["BACKEND"] == "hccl" and env["WORLD_SIZE"] == "16"
        assert env["RANKTABLEFILE"] == table and env["RANK_TABLE_FILE"] == table
        assert env["RANK"] == str(p["rank"]) and env["RANK_ID"] == str(p["rank"])
        assert env["LOCAL_RANK"] == str(p["rank"] % 8)  # the seed comment: local = rank - 8 on node 2
        assert env["RANK_ID_START"] == ("0" if p["rank"] < 8 else "8")  # seed: WORLD_SIZE/2 on node 2
        assert p["cwd"] == "/opt/atb-models"
        assert p["argv"] == ["python3", "./examples/run_pa.py", "--model_path",
                             "/data/atb_testdata/weights/llama2-70b/", "--max_output_length", "35",
                             "--max_batch_size", "1", "--input_text", "What's Deep Learning?"]
    assert len(plan["instances"][0]["ranks"]) == 16
