"""The demo rank's --vllm-dp mode on what a vllm-ascend DP instance deploys: each node (127.0.0.1,
127.0.0.2) reads vLLM's DP flags and HCCL_IF_IP as a multi-node `vllm serve` does; the first node
serves, the other is headless with start rank 2, and both meet at --data-parallel-address:rpc-port.
"""
from __future__ import annotations

import os
import subprocess
import sys

from launcher.core.pipeline import compile_text
from launcher.core.schema import compiled_check
from launcher.host.demo_rank.errors import EXIT_ENV
from tests import contracts

HEALTH = 18850


def topology(tmp_path) -> str:
    hosts = "".join(f"  - name: n{k}\n    address: 127.0.0.{k + 1}\n    transport: local\n"
                    f"    devices: {{0: 10.79.{k}.1, 1: 10.79.{k}.2}}\n" for k in range(2))
    return (f"version: 1\nname: dp\ndefaults:\n  deploy_dir: {tmp_path}\n  preflight: false\nhosts:\n{hosts}"
            "instances:\n  - name: vl\n    processes: per_host\n    hosts: [n0, n1]\n"
            # generic: framework: vllm-ascend refuses loopback HCCL_IF_IPs (the e2e test has real ones)
            "    env: {HCCL_IF_IP: \"{{ host.address }}\"}\n"
            "    rendezvous_port: 27389\n"
            f"    command: [launcher-demo-rank, --vllm-dp, --health-port, \"{HEALTH}\", --data-parallel-size, \"4\",\n"
            "              --data-parallel-size-local, \"2\", --data-parallel-address, \"{{ master_addr }}\",\n"
            "              --data-parallel-rpc-port, \"{{ rendezvous_port }}\", --tensor-parallel-size, \"2\"]\n"
            "    worker_args: [--headless, --data-parallel-start-rank, \"{{ host.index * 2 }}\"]\n")


def start(p, argv=None, env=None):
    return subprocess.Popen([sys.executable, "-m", "launcher.host.demo_rank", *(argv or p.argv[1:]),
                             "--barrier-timeout", "20", "--health-host", p.env["LAUNCHER_HOST_ADDRESS"]],
                            env={**p.env, "PYTHONPATH": os.getcwd(), **(env or {})}, stderr=subprocess.PIPE, text=True)


def test_two_nodes_form_their_dp_world_as_vllm_would(tmp_path):
    programs = contracts.deploy(compile_text(topology(tmp_path), "F", check=compiled_check()), tmp_path)
    procs = [start(p) for p in programs]
    try:
        docs = contracts.ready_health(programs, procs, HEALTH)
        assert [d["vllm"]["dp_ranks"] for d in docs] == [[0, 1], [2, 3]]
        assert [d["vllm"]["serves_api"] for d in docs] == [True, False]
        assert [d["vllm"]["hccl_if_ip"] for d in docs] == ["127.0.0.1", "127.0.0.2"]
        assert [d["world_size"] for d in docs] == [2, 2]
    finally:
        contracts.stop_all(procs)


def test_what_vllm_would_refuse_stops_the_node(tmp_path):
    programs = contracts.deploy(compile_text(topology(tmp_path), "F", check=compiled_check()), tmp_path)
    worker = programs[1]
    no_headless = [a for a in worker.argv[1:] if a != "--headless"]
    _, err = (proc := start(worker, no_headless)).communicate(timeout=20)
    assert proc.returncode == EXIT_ENV and "--data-parallel-start-rank 2 without --headless" in err
    _, err = (proc := start(worker, env={"HCCL_IF_IP": "10.255.0.1"})).communicate(timeout=20)
    assert proc.returncode == EXIT_ENV and "HCCL_IF_IP='10.255.0.1' is not an address of this node" in err
