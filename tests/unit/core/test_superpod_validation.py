"""Atlas A3 SuperPoD topology errors (ranktable v1.2): each one at the line:col of what to fix."""
from __future__ import annotations

from launcher.core.pipeline import compile_text
from tests.helpers import run_cli, write


def a3_host(name: str, address: str, pod: object, sdids: list[object], net: str, nic: str | None = None) -> str:
    out = f"  - name: {name}\n    address: {address}\n" + (f"    super_pod_id: {pod}\n" if pod is not None else "")
    out += "    devices:\n"
    for d, sdid in enumerate(sdids):
        out += (f"      {d}: {net}.{d + 1}\n" if sdid is None else
                f"      {d}: {{ip: {net}.{d + 1}, super_device_id: {sdid}}}\n" if nic is None else
                f"      {d}: {{ip: {net}.{d + 1}, nic_ip: {nic}.{d + 1}, super_device_id: {sdid}}}\n")
    return out


def topo(*hosts: str, instances: str = "instances:\n  - {name: m, hosts: [a, b], command: [run]}\n") -> str:
    return "version: 1\nname: t\nhosts:\n" + "".join(hosts) + instances


def errors(tmp_path, text: str) -> list[str]:
    path = write(tmp_path, text)
    run = run_cli("validate", path)
    lines = [ln.replace(path, "F") for ln in run.err.splitlines()]
    assert run.code == 2, lines
    assert lines[-1].endswith("nothing was changed")
    return lines


A = a3_host("a", "10.1.0.1", 0, [100663296, 100663297], "10.9.0")
B = a3_host("b", "10.1.0.2", 0, [100728832, 100728833], "10.9.1")


def test_an_a2_host_stays_as_short_as_before_and_gets_v10():
    text = topo(a3_host("a", "10.1.0.1", None, [None, None], "10.9.0"),
                a3_host("b", "10.1.0.2", None, [None, None], "10.9.1"))
    table = compile_text(text).plan.instances[0].ranktable.value()
    assert table["version"] == "1.0" and "super_pod_list" not in table
    assert "super_device_id" not in table["server_list"][0]["device"][0]


def test_superpod_hosts_get_v12():
    table = compile_text(topo(A, B)).plan.instances[0].ranktable.value()
    assert table["version"] == "1.2"
    assert table["server_list"][1]["device"][1]["super_device_id"] == "100728833"
    assert table["super_pod_list"] == [{"super_pod_id": "0", "server_list": [{"server_id": "10.1.0.1"},
                                                                             {"server_id": "10.1.0.2"}]}]


def test_mixing_superpod_and_other_hosts_in_one_instance(tmp_path):
    lines = errors(tmp_path, topo(A, a3_host("b", "10.1.0.2", None, [None, None], "10.9.1")))
    assert any(ln.startswith("F:16:22: error: instances[0].hosts: instance m mixes SuperPoD hosts (a: ranktable "
                             "v1.2) with hosts without super_pod_id (b: v1.0)") for ln in lines), lines


def test_a_superpod_device_without_sdid(tmp_path):
    lines = errors(tmp_path, topo(A, a3_host("b", "10.1.0.2", 0, [100728832, None], "10.9.1")))
    assert any(ln.startswith("F:15:10: error: hosts[1].devices.1: host b device 1: a SuperPoD host's device needs "
                             "its super_device_id") for ln in lines), lines


def test_duplicate_sdid_within_a_pod_but_not_across_pods(tmp_path):
    dup = a3_host("b", "10.1.0.2", 0, [100728832, 100663297], "10.9.1")
    lines = errors(tmp_path, topo(A, dup))
    assert any(ln.startswith("F:15:10: error: hosts[1].devices.1: host b device 1: duplicate super_device_id "
                             "100663297 in SuperPoD 0 (also at hosts[0].devices.1)") for ln in lines), lines
    other_pod = a3_host("b", "10.1.0.2", 1, [100663296, 100663297], "10.9.1", nic="10.8.1")
    a_nic = a3_host("a", "10.1.0.1", 0, [100663296, 100663297], "10.9.0", nic="10.8.0")
    assert compile_text(topo(a_nic, other_pod)).plan.instances[0].world_size == 4


def test_sdid_on_a_host_without_super_pod_id(tmp_path):
    lines = errors(tmp_path, topo(a3_host("a", "10.1.0.1", None, [None, 7], "10.9.0"),
                                  a3_host("b", "10.1.0.2", None, [None, None], "10.9.1")))
    assert any(ln.startswith("F:8:10: error: hosts[0].devices.1: host a device 1: super_device_id without the "
                             "host's super_pod_id") for ln in lines), lines


def test_servers_of_one_pod_listed_together(tmp_path):
    c = a3_host("c", "10.1.0.3", 1, [100663296, 100663297], "10.9.2")
    lines = errors(tmp_path, topo(A, c, B, instances="instances:\n  - {name: m, hosts: [a, c, b], command: [run]}\n"))
    assert any(ln.startswith("F:23:29: error: instances[0].hosts[2]: instance m: host b of SuperPoD 0 comes after "
                             "a host of SuperPoD 1") for ln in lines), lines


def test_server_id_longer_than_64(tmp_path):
    long = A.replace("    address: 10.1.0.1\n", "    address: 10.1.0.1\n    server_id: " + "s" * 65 + "\n")
    lines = errors(tmp_path, topo(long, B))
    assert any(ln.startswith("F:6:16: error: hosts[0].server_id: host a: server_id 's") and
               ln.endswith("' is 65 characters; HCCL's ranktable parser takes at most 64") for ln in lines), lines


def test_discover_left_undiscovered(tmp_path):
    host = "  - name: a\n    address: 10.1.0.1\n    super_pod_id: discover\n    devices:\n      0: discover\n"
    lines = errors(tmp_path, topo(host, instances="instances:\n  - {name: m, hosts: [a], command: [run]}\n"))
    assert any(ln.startswith("F:6:19: error: hosts[0].super_pod_id: host a: super_pod_id is left to discovery")
               for ln in lines), lines
    assert any(ln.startswith("F:8:10: error: hosts[0].devices.0: host a device 0: super_device_id is left to "
                             "discovery") for ln in lines), lines


def test_a_link_mixing_a3_and_a2(tmp_path):
    a2 = a3_host("b", "10.1.0.2", None, [None, None], "10.9.1")
    text = topo(A, a2, instances=(
        "instances:\n  - {name: p, hosts: [a], command: [run], probe: {log: up}}\n"
        "  - {name: d, hosts: [b], command: [run]}\n"
        "llm_datadist:\n  clusters:\n    - {id: 1, instance: p, role: prompt, listen_port: 26000}\n"
        "    - {id: 2, instance: d, role: decoder}\n  links:\n    - {name: l, clusters: [1, 2]}\n"))
    lines = errors(tmp_path, text)
    assert any("llm_datadist.links[0].clusters: link l mixes SuperPoD hosts" in ln for ln in lines), lines


def test_a_world_across_super_pods_needs_each_dies_nic_ip_and_its_table_carries_it(tmp_path):
    """HCCL's A3 guide: across SuperPoDs device_ip is the die's RoCE NIC IP, not its vnic's."""
    b1 = a3_host("b", "10.1.0.2", 1, [100663296, 100663297], "10.9.1")
    lines = errors(tmp_path, topo(A, b1))
    assert any(ln.startswith("F:8:10: error: hosts[0].devices.0: host a device 0: instance m spans SuperPoDs 0, 1, "
                             "so HCCL reaches it over RoCE") and "add nic_ip: <IP> (or nic_ip: discover)" in ln
               for ln in lines), lines
    a_nic = a3_host("a", "10.1.0.1", 0, [100663296, 100663297], "10.9.0", nic="10.8.0")
    b_nic = a3_host("b", "10.1.0.2", 1, [100663296, 100663297], "10.9.1", nic="10.8.1")
    table = compile_text(topo(a_nic, b_nic)).plan.instances[0].ranktable.value()
    ips = [d["device_ip"] for s in table["server_list"] for d in s["device"]]
    assert ips == ["10.8.0.1", "10.8.0.2", "10.8.1.1", "10.8.1.2"]
    one_pod = compile_text(topo(a_nic, b_nic.replace("super_pod_id: 1", "super_pod_id: 0")
                                .replace("100663296", "100728832").replace("100663297", "100728833")))
    ips = [d["device_ip"] for s in one_pod.plan.instances[0].ranktable.value()["server_list"] for d in s["device"]]
    assert ips == ["10.9.0.1", "10.9.0.2", "10.9.1.1", "10.9.1.2"]  # over HCCS: the vnic IPs


def test_hccs_disabled_inside_one_pod_also_goes_over_the_nic(tmp_path):
    inst = ("instances:\n  - {name: m, hosts: [a, b], command: [run], env: {HCCL_INTER_HCCS_DISABLE: 'TRUE'}}\n")
    lines = errors(tmp_path, topo(A, B, instances=inst))
    assert any("instance m sets HCCL_INTER_HCCS_DISABLE=TRUE, so HCCL reaches it over RoCE" in ln for ln in lines), lines


def test_a_nic_ip_given_twice_or_left_undiscovered(tmp_path):
    a_nic = a3_host("a", "10.1.0.1", 0, [100663296, 100663297], "10.9.0", nic="10.8.0")
    b_dup = a3_host("b", "10.1.0.2", 1, [100663296, 100663297], "10.9.1", nic="10.8.0")
    lines = errors(tmp_path, topo(a_nic, b_dup))
    assert any(ln.startswith("F:14:10: error: hosts[1].devices.0: host b device 0: duplicate nic_ip 10.8.0.1 (also at "
                             "hosts[0].devices.0)") for ln in lines), lines
    left = b_dup.replace("nic_ip: 10.8.0.1", "nic_ip: discover")
    lines = errors(tmp_path, topo(a_nic, left))
    assert any("host b device 0: nic_ip is left to discovery and not in the lock file yet; run `launcher discover"
               in ln for ln in lines), lines
