"""The rendezvous' table is `launcher render`'s for the same servers and devices (the e2e test,
tests/e2e/test_kube_rendezvous.py, runs the group for real); its hccn_tool reading is the checker's."""
from __future__ import annotations

import pytest

from launcher.core.pipeline import compile_text, rendered
from launcher.host.npu_facts import hccn_ip
from launcher.host.rendezvous import Failed, table_bytes

TOPO = """
version: 1
name: t
hosts:
  - {name: a, address: 10.1.0.1, devices: {3: 10.2.0.4, 1: 10.2.0.2, 5: 10.2.0.6, 7: 10.2.0.8}}
  - {name: b, address: 10.1.0.2, devices: {1: 10.2.1.2, 3: 10.2.1.4, 5: 10.2.1.6, 7: 10.2.1.8}}
instances:
  - {name: x, hosts: [a, b], devices: [1, 3], processes: per_host, command: [serve]}
  - {name: p, role: prefill, hosts: [a], devices: [5, 7], processes: per_host, command: [serve]}
  - {name: d, role: decode, hosts: [b], devices: [5, 7], processes: per_host, command: [serve]}
pd_groups: [{name: g, scheduler: a, prefill: [p], decode: [d]}]
"""


def test_the_rendezvous_builds_the_bytes_render_writes():
    _, files = rendered(compile_text(TOPO).plan)
    members = [{"address": "10.1.0.1", "devices": [(3, "10.2.0.4"), (1, "10.2.0.2")]},
               {"address": "10.1.0.2", "devices": [(1, "10.2.1.2"), (3, "10.2.1.4")]}]
    assert table_bytes("hccl", members) == files["a"]["ranktables/x.json"].content
    local = files["b"]["ranktables/local_ranktable_10.1.0.2_57.json"]
    assert table_bytes("pd-local", [{"address": "10.1.0.2", "devices": [(7, "10.2.1.8"), (5, "10.2.1.6")]}]) \
        == local.content


@pytest.mark.parametrize("output, ip", [
    ("ipaddr:192.168.1.8\nnetmask:255.255.255.0\n", "192.168.1.8"),
    ("  ipaddr : 10.0.0.1 \r\n", "10.0.0.1"),
    ("vnic ipaddr: 10.0.0.9\nipaddr:10.0.0.2\n", "10.0.0.2"),   # the key, not a suffix of another
    ("netmask:255.255.255.0\n", None),
    ("ipaddr:\n", ""),
])
def test_hccn_tool_ip_is_read_as_the_link_checker_reads_it(output, ip):
    assert hccn_ip(output) == ip


A3 = """
version: 1
name: t
hosts:
  - {name: a, address: 10.1.0.1, super_pod_id: 0, devices: {0: {ip: 10.3.0.1, super_device_id: 104857600},
     1: {ip: 10.3.0.2, super_device_id: 104857601}}}
  - {name: b, address: 10.1.0.2, super_pod_id: 0, devices: {0: {ip: 10.3.1.1, super_device_id: 104857616},
     1: {ip: 10.3.1.2, super_device_id: 104857617}}}
  - {name: c, address: 10.1.0.3, super_pod_id: 1, devices: {0: {ip: 10.3.2.1, super_device_id: 104857600},
     1: {ip: 10.3.2.2, super_device_id: 104857601}}}
instances:
  - {name: x, hosts: [a, b, c], processes: per_host, command: [serve]}
"""
A3_MEMBERS = [{"address": "10.1.0.1", "devices": [[1, "10.3.0.2", 104857601, "0"], [0, "10.3.0.1", 104857600, "0"]]},
              {"address": "10.1.0.2", "devices": [[0, "10.3.1.1", 104857616, "0"], [1, "10.3.1.2", 104857617, "0"]]},
              {"address": "10.1.0.3", "devices": [[0, "10.3.2.1", 104857600, "1"], [1, "10.3.2.2", 104857601, "1"]]}]


def test_superpod_servers_get_the_v1_2_table_render_writes():
    _, files = rendered(compile_text(A3).plan)
    assert table_bytes("hccl", A3_MEMBERS) == files["a"]["ranktables/x.json"].content


def test_a_super_pods_servers_placed_apart_fail_the_group():
    members = [A3_MEMBERS[0], A3_MEMBERS[2], A3_MEMBERS[1]]
    with pytest.raises(Failed, match=r"Super Pod 0's apart \(worker 0: pod 0, worker 1: pod 1, worker 2: pod 0\)"):
        table_bytes("hccl", members)
