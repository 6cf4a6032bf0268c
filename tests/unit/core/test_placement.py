"""Rank placement and service ports have one definition, which validate, expand and apply share."""
from __future__ import annotations

import pytest

from launcher.deploy.files import compile_file
from launcher.core.placement import rank_placement, service_ports
from tests.helpers import CONFIGS

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_the_plan_places_ranks_where_rank_placement_says(config):
    result = compile_file(str(config))  # with the files it names (a MindIE base config)
    for inst in result.topology.instances:
        ranks = result.plan.instance(inst.name).ranks
        assert [(r.host, r.device_id) for r in ranks] == rank_placement(result.topology, inst)
        for host in inst.hosts:  # LOCAL_RANK restarts at 0 on each host
            assert [r.local_rank for r in ranks if r.host == host] == list(range(sum(r.host == host for r in ranks)))


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_service_programs_carry_their_ports(config):
    result = compile_file(str(config))  # with the files it names (a MindIE base config)
    for hp in result.plan.hosts:
        for p in hp.programs:
            if p.kind != "service":
                assert p.ports == ()
                continue
            ports = service_ports(result.topology.service(p.owner).spec)
            assert p.ports == ports
            for sp in ports:  # a client port is the one the service advertises at its host's address
                if sp.client:
                    assert any(a.endswith(f"{hp.host.address}:{sp.port}") for a in p.argv), p.argv


def test_rank_placement_skips_undeclared_hosts():
    text = ("version: 1\nname: t\nhosts:\n  - {name: a, address: 10.0.0.1, devices: {1: 10.9.0.2, 0: 10.9.0.1}}\n"
            "instances:\n  - {name: m, hosts: [a, nowhere], command: [run]}\n")
    from launcher.core.load import build_topology
    from launcher.core.yamlsrc import load_yaml
    topo = build_topology(load_yaml(text, "t.yaml"))
    assert rank_placement(topo, topo.instances[0]) == [("a", 0), ("a", 1)]
