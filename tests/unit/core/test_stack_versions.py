"""What differs by a stack's release is chosen by `framework_version:`, and RH2D's required worker flags.

vllm-ascend's yuanrong client (reference §7.4; docs/STACKS.md): released tags v0.19.1rc1 .. v0.25.1rc1
read DS_WORKER_ADDR / DS_ENABLE_*; main reads only the JSON at YR_CONFIG_PATH and raises without it.
vllm-ascend kv_pool.md: the RH2D worker must run with `--enable_huge_tlb true --enable_fallocate false`.
"""
from __future__ import annotations

import json

import pytest

from launcher.core.pipeline import rendered
from tests.helpers import compile_checked as compile_, line_of, spec_errors as errors

TOPOLOGY = """\
version: 1
name: yr
defaults: {preflight: false}
hosts:
  - {name: a, address: 10.0.0.1, devices: {0: 10.40.0.1, 1: 10.40.1.1}}
  - {name: b, address: 10.0.0.2, devices: {0: 10.40.0.2, 1: 10.40.1.2}}
services:
  - {name: etcd, kind: etcd, hosts: [a]}
  - name: ds
    kind: datasystem
    hosts: [a, b]
    etcd: etcd
    port: 31599
    remote_h2d_devices: [0]
WORKER
instances:
  - name: m
    hosts: [b]
    devices: [1]
    processes: per_host
    datasystem: ds
    command: [vllm, serve]
INSTANCE
"""


def text(worker: str = "", instance: str = "    framework: vllm-ascend\n    framework_version: v0.25.1rc1\n") -> str:
    return TOPOLOGY.replace("WORKER\n", worker).replace("INSTANCE\n", instance)








def programs(t: str) -> dict[str, dict]:
    plan = compile_(t).plan
    return {f"{p.name}@{hp.host.name}": {"argv": p.argv, "env": dict(p.env)} for hp in plan.hosts for p in hp.programs}


def test_an_rh2d_worker_gets_the_flags_kv_pool_md_requires():
    progs = programs(text())
    for name in ("ds@a", "ds@b"):
        argv = " ".join(progs[name]["argv"]) if name in progs else None
        assert argv is not None, sorted(progs)
        assert "--remote_h2d_device_ids 0 --enable_huge_tlb true --enable_fallocate false" in argv, argv


def test_a_worker_without_rh2d_gets_neither_flag():
    progs = programs(text().replace("    remote_h2d_devices: [0]\n", ""))
    argv = " ".join(progs["ds@a"]["argv"])
    assert "--enable_huge_tlb" not in argv and "--enable_fallocate" not in argv


@pytest.mark.parametrize("worker, key", [("    enable_huge_tlb: false\n", "enable_huge_tlb"),
                                         ("    enable_fallocate: true\n", "enable_fallocate")])
def test_rh2d_with_a_flag_it_cannot_run_with_is_refused(worker, key):
    t = text(worker)
    errs = errors(t)
    assert any(e.startswith(f"F:{line_of(t, key + ':')}:") and f"RH2D (remote_h2d_devices) needs the worker "
               f"started with --{key}" in e for e in errs), errs


def test_released_vllm_ascend_reads_ds_env():
    env = programs(text())["m-h0@b"]["env"]
    assert env["DS_WORKER_ADDR"] == "10.0.0.2:31599" and env["DS_ENABLE_REMOTE_H2D"] == "1"
    assert "YR_CONFIG_PATH" not in env


def test_vllm_ascend_main_reads_the_file_at_yr_config_path():
    t = text(instance="    framework: vllm-ascend\n    framework_version: main\n")
    result = compile_(t)
    _, files = rendered(result.plan)
    hp = next(h for h in result.plan.hosts if h.host.name == "b")
    env = dict(hp.programs[-1].env)
    assert not any(k.startswith("DS_") for k in env), env
    rel = env["YR_CONFIG_PATH"].split("/current/", 1)[1]
    assert env["YR_CONFIG_PATH"] == f"{hp.root}/current/{rel}"
    # vllm_ascend yuanrong_backend.py YuanrongConfig.from_file: worker_addr "<host>:<port>", enable_remote_h2d
    assert json.loads(files["b"][rel].content) == {"worker_addr": "10.0.0.2:31599", "enable_remote_h2d": True}


@pytest.mark.parametrize("instance, needle, message", [
    ("    framework: vllm-ascend\n", "datasystem: ds",
     "name which with framework_version (`main` or a release tag v0.19.1rc1 .. v0.25.1rc1)"),
    ("    framework: vllm-ascend\n    framework_version: v0.26.0\n", "framework_version",
     "vllm-ascend 'v0.26.0' is outside the releases whose source these rules were read from"),
    ("    framework: vllm-ascend\n    framework_version: latest\n", "framework_version",
     "'latest' is not `main` or a release tag like v0.25.1rc1"),
    ("    framework: vllm-ascend\n    framework_version: v0.11.0\n", "framework_version", "outside the releases"),
    ("    framework_version: main\n", "framework_version",
     "a generic instance (no framework) has no rule that depends on its version"),
])
def test_a_version_no_rule_was_read_for_is_an_error_not_a_guess(instance, needle, message):
    t = text(instance=instance)
    errs = errors(t)
    assert any(e.startswith(f"F:{line_of(t, needle)}:") and message in e for e in errs), errs


def test_a_generic_instance_keeps_seed_003s_ds_env():
    env = programs(text(instance=""))["m-h0@b"]["env"]
    assert env["DS_WORKER_ADDR"] == "10.0.0.2:31599" and "YR_CONFIG_PATH" not in env
