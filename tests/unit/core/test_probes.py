"""Probe specs as hosts read them: one frozen record per probe, its JSON keys in a fixed order
(gang.json and hostside's `probe` read them; the golden gang.json files hold the bytes)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from launcher.core.pipeline import compile_text
from launcher.core.probes import ProbeSpec, dependency_probes, probe_specs

TOPO = """\
version: 1
name: p
defaults: {deploy_dir: /tmp/p, preflight: false}
hosts:
  - name: n0
    address: 10.0.0.1
    devices: {0: 10.213.240.1}
instances:
  - name: a
    hosts: [n0]
    devices: [0]
    command: [launcher-demo-rank]
    probe: {http: ':8080/health', tcp: '8081', command: [curl, -f, x], log: 'ready', timeout: 2, period: 0.5}
"""


def test_an_instance_probe_is_one_spec_per_kind_on_its_host():
    plan = compile_text(TOPO, "p.yaml").plan
    specs = probe_specs(plan, "a", "n0")
    assert [(s.kind, s.target) for s in specs] == [
        ("http", "http://10.0.0.1:8080/health"), ("tcp", "10.0.0.1:8081"), ("command", ("curl", "-f", "x")),
        ("log", "ready")]
    assert all((s.timeout, s.period) == (2, 0.5) and s.programs for s in specs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs[0].kind = "tcp"  # type: ignore[misc]


def test_to_json_keeps_the_keys_and_order_hosts_read():
    spec = ProbeSpec("command", ("etcdctl", "endpoint", "health"), 5.0, 1.0, ("etcd",))
    assert json.dumps(spec.to_json()) == ('{"timeout": 5.0, "period": 1.0, "programs": ["etcd"], '
                                          '"kind": "command", "target": ["etcdctl", "endpoint", "health"]}')


def test_a_dependant_gets_the_probes_another_host_can_run():
    topo = TOPO.replace("devices: {0: 10.213.240.1}", "devices: {0: 10.213.240.1, 1: 10.213.240.2}") + """\
  - name: b
    hosts: [n0]
    devices: [1]
    command: [launcher-demo-rank]
    depends_on: [a]
"""
    plan = compile_text(topo, "p.yaml").plan
    deps = dependency_probes(plan)
    # http and tcp run from anywhere; a command may not be installed elsewhere, a log is local
    assert deps["b"] == [{"owner": "a", "probes": [s.to_json() for s in probe_specs(plan, "a", "n0")[:2]]}]


TWO_HOSTS = """\
version: 1
name: p
defaults: {deploy_dir: /tmp/p, preflight: false}
hosts:
  - {name: n0, address: 10.0.0.1, devices: {0: 10.213.240.1}}
  - {name: n1, address: 10.0.0.2, devices: {0: 10.213.240.2}}
instances:
  - name: a
    hosts: [n0, n1]
    processes: per_host
    command: [serve]
    probe: {http: ':8080/health'ON}
services:
  - {name: b, kind: generic, hosts: [n0], depends_on: [a], command: [client]}
"""


@pytest.mark.parametrize("on, probed", [("", ["n0", "n1"]), (", on: every_host", ["n0", "n1"]),
                                        (", on: first_host", ["n0"])])
def test_a_probe_on_the_first_host_only_is_run_there_alone(on: str, probed: list[str]):
    """`on: first_host` (a Ray head and its driver beside workers that serve nothing): status, up's
    readiness wait and a dependent's wait ask the first host only."""
    plan = compile_text(TWO_HOSTS.replace("ON", on), "p.yaml").plan
    assert [h for h in ("n0", "n1") if probe_specs(plan, "a", h)] == probed
    waits = dependency_probes(plan)["b"][0]["probes"]
    address = {"n0": "10.0.0.1", "n1": "10.0.0.2"}
    assert [w["target"] for w in waits] == [f"http://{address[h]}:8080/health" for h in probed]
