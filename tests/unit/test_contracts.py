"""Issue 14 point 5: each framework's example configs, deployed with the host side's own writer, meet
that stack's documented acceptance rules (tests/contracts.py) on every host; and the same rules
reject what a generic instance (the launcher before `framework:`) deploys.
"""
from __future__ import annotations

import os
import re

import pytest

from launcher.core.pipeline import compile_source
from launcher.core.yamlsrc import load_yaml
from launcher.deploy.inputs import read_inputs
from tests import contracts
from tests.helpers import CONFIGS


def deployed(config: str, tmp_path, edit=lambda text: text):
    path = CONFIGS / config
    text = edit(path.read_text(encoding="utf-8"))
    text = text.replace("\ndefaults:\n", f"\ndefaults:\n  deploy_dir: {tmp_path}\n", 1)
    src = load_yaml(text, str(path))
    result = compile_source(src, inputs=read_inputs(src.data, str(path)))
    return result, contracts.deploy(result, tmp_path)


def generic(text: str) -> str:
    """The same topology as the launcher deployed it before `framework:` (a generic instance)."""
    return re.sub(r"\n    (framework|mindie): [^\n]*", "", text)


def test_mindie_service_bare_metal_meets_mindies_rules(tmp_path):
    _, programs = deployed("mindie-service-2node.yaml", tmp_path)
    assert contracts.mindie_problems(programs, "llama3-70b") == []


def test_mindie_service_in_containers_meets_mindies_rules(tmp_path):
    def containers(text):
        return (text.replace("    address: 192.168.20.10\n", "    address: 192.168.20.10\n    container_ip: 172.17.0.10\n")
                .replace("    address: 192.168.20.11\n", "    address: 192.168.20.11\n    container_ip: 172.17.0.11\n"))
    _, programs = deployed("mindie-service-2node.yaml", tmp_path, containers)
    assert [p.env["MIES_CONTAINER_IP"] for p in programs] == ["172.17.0.10", "172.17.0.11"]
    assert contracts.mindie_problems(programs, "llama3-70b") == []


def test_mindies_rules_reject_what_a_generic_instance_deploys(tmp_path):
    _, programs = deployed("mindie-service-2node.yaml", tmp_path, generic)
    problems = contracts.mindie_problems(programs, "llama3-70b")
    assert any("finds no single own server by MIES_CONTAINER_IP or HOST_IP" in m for m in problems), problems
    assert any("MIES_CONFIG_JSON_PATH is not set" in m for m in problems), problems
    assert any("server 192.168.20.10 has no container_ip" in m for m in problems), problems


def test_mindies_rules_reject_a_rank_table_more_open_than_0640_or_a_symlink(tmp_path):
    """What the launcher deployed before this change: ranktables 0644."""
    _, programs = deployed("mindie-service-2node.yaml", tmp_path)
    table = programs[0].env["RANK_TABLE_FILE"]
    os.chmod(os.path.realpath(table), 0o644)
    assert any("has mode 0644, more than 0640" in m for m in contracts.mindie_problems(programs, "llama3-70b"))
    real = os.path.realpath(table)
    os.rename(real, real + ".x")
    os.symlink(real + ".x", real)
    os.chmod(real + ".x", 0o640)
    assert any("is a symlink" in m for m in contracts.mindie_problems(programs, "llama3-70b"))


@pytest.mark.parametrize("config", ["mindie-atb-2x4.yaml", "mindie-atb-2x8.yaml"])
def test_seed_004_meets_atbs_rules(config, tmp_path):
    result, programs = deployed(config, tmp_path)
    assert len(programs) == result.plan.instances[0].world_size
    assert contracts.atb_problems(programs, result.plan.instances[0].name) == []


def test_atbs_rules_reject_a_hostname_server_id(tmp_path):
    _, programs = deployed("mindie-atb-2x4.yaml", tmp_path,
                           lambda t: generic(t).replace("address: 90.90.152.89", "address: huawei89.lab"))
    assert any("server_id 'huawei89.lab' is not an IP" in m for m in contracts.atb_problems(programs, "llama2-70b"))


@pytest.mark.parametrize("config", ["vllm-ascend-dp-2node.yaml", "vllm-ascend-ray-2node.yaml",
                                    "vllm-ascend-pd-mooncake.yaml"])
def test_vllm_ascend_configs_meet_the_guides_rules(config, tmp_path):
    result, programs = deployed(config, tmp_path)
    assert contracts.vllm_problems(programs, result.topology) == []


def test_vllm_rules_reject_what_a_generic_instance_deploys(tmp_path):
    """A generic instance took a kv_port inside Mooncake's random range, a shared engine_id, and no HCCL_IF_IP."""
    def bad(text):
        text = generic(text).replace('"kv_port": "30000"', '"kv_port": "27000"')
        text = text.replace('"engine_id": "decode-0"', '"engine_id": "prefill-0"')
        return text.replace('    HCCL_IF_IP: "{{ host.address }}"\n', "")
    result, programs = deployed("vllm-ascend-pd-mooncake.yaml", tmp_path, bad)
    problems = contracts.vllm_problems(programs, result.topology)
    assert any("kv_port 27000 below 20000 + 1000 x 8" in m for m in problems), problems
    assert any("engine_id prefill-0 is also prefill's" in m for m in problems), problems
    assert any("HCCL_IF_IP None is not this node's own address" in m for m in problems), problems


def test_vllm_rules_want_each_nodes_own_interface(tmp_path):
    """A fleet with mixed NIC names: what configs/ hard-coded (one name in defaults.env for every
    node) sends node1's gloo, TensorPipe and HCCL sockets to an interface it does not have."""
    def mixed(text):
        return text.replace("    nic: enp189s0f0\n    devices: {0: 10.20.1.10", "    nic: eth7\n    devices: {0: 10.20.1.10")
    result, programs = deployed("vllm-ascend-dp-2node.yaml", tmp_path, mixed)
    assert {p.host: p.env["GLOO_SOCKET_IFNAME"] for p in programs} == {"node0": "enp189s0f0", "node1": "eth7"}
    assert contracts.vllm_problems(programs, result.topology) == []

    def hard_coded(text):
        return mixed(text).replace('    HCCL_IF_IP: "{{ host.address }}"', '    HCCL_IF_IP: "{{ host.address }}"\n'
                                   "    GLOO_SOCKET_IFNAME: enp189s0f0\n    TP_SOCKET_IFNAME: enp189s0f0\n"
                                   "    HCCL_SOCKET_IFNAME: enp189s0f0", 1)
    result, programs = deployed("vllm-ascend-dp-2node.yaml", tmp_path / "hard", hard_coded)
    problems = contracts.vllm_problems(programs, result.topology)
    assert "deepseek on node1: GLOO_SOCKET_IFNAME 'enp189s0f0' is not the interface holding its address (eth7)" \
        in problems, problems
    assert "deepseek on node1: HCCL_SOCKET_IFNAME 'enp189s0f0' does not select the interface eth7" in problems
    assert not any("on node0" in m for m in problems), problems


@pytest.mark.parametrize("config", ["yuanrong-rh2d.yaml", "yuanrong-rh2d-container.yaml"])
def test_yuanrong_configs_meet_vllm_ascends_rules(config, tmp_path):
    result, programs = deployed(config, tmp_path)
    assert contracts.yuanrong_problems(programs, result.topology) == []


def test_yuanrong_on_vllm_ascend_main_meets_its_rules(tmp_path):
    result, programs = deployed("yuanrong-rh2d.yaml", tmp_path, lambda t: t.replace("v0.25.1rc1", "main"))
    assert contracts.yuanrong_problems(programs, result.topology) == []
    assert all("DS_WORKER_ADDR" not in p.env for p in programs if p.owner.startswith("vllm"))


def test_yuanrong_rules_reject_an_rh2d_worker_without_its_flags(tmp_path):
    """What the launcher rendered before: RH2D on, neither flag."""
    result, programs = deployed("yuanrong-rh2d.yaml", tmp_path)
    for p in programs:
        if "--enable_fallocate" in p.argv:
            k = p.argv.index("--enable_huge_tlb")
            p.argv = p.argv[:k]
    assert any("RH2D worker without --enable_huge_tlb true --enable_fallocate false" in m
               for m in contracts.yuanrong_problems(programs, result.topology))
