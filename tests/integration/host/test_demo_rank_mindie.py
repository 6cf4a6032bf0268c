"""The demo rank's --mindie mode on what a mindie-service instance deploys: each "server" (127.0.0.2,
127.0.0.3) finds itself by HOST_IP or MIES_CONTAINER_IP, checks the rank table and config.json as
MindIE does, and both meet at the master's multiNodesInferPort; a table MindIE would refuse stops it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launcher.core.pipeline import compile_text
from launcher.core.schema import compiled_check
from launcher.host.demo_rank.errors import EXIT_ENV, EXIT_MISMATCH
from tests import contracts

ENDPOINT = 18821  # ServerConfig.port: the master serves requests there
BASE = json.dumps({"ServerConfig": {"port": ENDPOINT}, "BackendConfig": {"multiNodesInferEnabled": False}}).encode()
HEALTH = 18820


def topology(tmp_path, containers: bool) -> str:
    hosts = "".join(
        f"  - name: s{k}\n    address: 127.0.0.{k + 2}\n    transport: local\n"
        + (f"    container_ip: 127.0.1.{k + 2}\n" if containers else "")
        + f"    devices: {{0: 10.77.{k}.1, 1: 10.77.{k}.2}}\n" for k in range(2))
    return (f"version: 1\nname: mi\ndefaults:\n  deploy_dir: {tmp_path}\n  preflight: false\nhosts:\n{hosts}"
            "instances:\n  - name: svc\n    framework: mindie-service\n"
            "    mindie: {config: base.json, port: 27120}\n    processes: per_host\n    hosts: [s0, s1]\n"
            f"    command: [launcher-demo-rank, --mindie, --health-port, \"{HEALTH}\"]\n")


def start(programs, extra_env=None):
    procs = []
    for p in programs:
        env = {**p.env, "PYTHONPATH": os.getcwd(), **(extra_env or {})}
        procs.append(subprocess.Popen([sys.executable, "-m", "launcher.host.demo_rank", *p.argv[1:],
                                       "--barrier-timeout", "20", "--health-host", p.env["LAUNCHER_HOST_ADDRESS"]],
                                      env=env, stderr=subprocess.PIPE, text=True))
    return procs


@pytest.mark.parametrize("containers", [False, True], ids=["bare-metal", "containers"])
def test_two_servers_form_their_world_as_mindie_would(tmp_path, containers):
    result = compile_text(topology(tmp_path, containers), "F", check=compiled_check(), inputs={"base.json": BASE})
    programs = contracts.deploy(result, tmp_path)
    procs = start(programs)
    try:
        docs = contracts.ready_health(programs, procs, HEALTH)
        assert [d["mindie"]["master"] for d in docs] == [True, False]  # rank 0's holder, s0
        assert [d["mindie"]["found_by"] for d in docs] == ["MIES_CONTAINER_IP" if containers else "HOST_IP"] * 2
        assert [d["world_size"] for d in docs] == [2, 2]
        # the master serves requests on its own address (MindIE: 127.0.0.1 unless config.json or
        # MIES_CONTAINER_IP says otherwise), the others serve none
        serves = "127.0.1.2" if containers else "127.0.0.2"
        assert docs[0]["mindie"]["endpoint"] == f"{serves}:{ENDPOINT}" and "endpoint" not in docs[1]["mindie"]
        import urllib.request
        with urllib.request.urlopen(f"http://{serves}:{ENDPOINT}/health", timeout=5) as r:
            assert json.load(r)["mindie"]["master"] is True
    finally:
        contracts.stop_all(procs)


def test_a_rank_table_mindie_would_refuse_stops_the_daemon(tmp_path):
    result = compile_text(topology(tmp_path, False), "F", check=compiled_check(), inputs={"base.json": BASE})
    programs = contracts.deploy(result, tmp_path)
    table = os.path.realpath(programs[0].env["RANK_TABLE_FILE"])
    os.chmod(table, 0o644)  # what the launcher deployed before
    proc = start(programs[:1])[0]
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_MISMATCH and "has mode 0644; MindIE takes at most 0640" in err
    proc = start(programs[:1], {"MINDIE_CHECK_INPUTFILES_PERMISSION": "0", "HOST_IP": "127.0.0.9"})[0]
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_ENV and "no server of the rank table has container_ip" in err
