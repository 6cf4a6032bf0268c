"""Issue 22 point 2: GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME, HCCL_SOCKET_IFNAME per host, from the interface
holding the host's address: the host's `nic:`, else the lock file's `nics:` (`launcher discover`).

vllm-ascend's multi-node tutorials set all three on every node (reference §7.2); torch's gloo reads
GLOO_SOCKET_IFNAME (torch/csrc/distributed/c10d/init.cpp), TensorPipe TP_SOCKET_IFNAME, HCCL
HCCL_SOCKET_IFNAME (`=name`: exactly that name; envref 07_0075). A value the topology's env sets wins;
a multi-node instance whose host's interface is not known is refused at line:col, naming the host and
the fix. Before this change the launcher derived none of them (every config hard-coded one name).
"""
from __future__ import annotations

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.lockfile import lock_text, parse_lock, parse_nics
from launcher.core.pipeline import compile_source
from launcher.core.schema import compiled_check
from launcher.core.yamlsrc import load_yaml
from tests.helpers import line_of

IFNAMES = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "HCCL_SOCKET_IFNAME")


def topo(nic_a: str = "", nic_b: str = "", env: str = "", framework: str = "vllm-ascend", hosts: str = "[a, b]",
         services: str = "") -> str:
    return ("version: 1\nname: t\n" + (f"defaults:\n  env:\n{env}" if env else "") + "hosts:\n"
            f"  - name: a\n    address: 10.1.0.1\n{nic_a}    devices: {{0: 10.9.0.1}}\n"
            f"  - name: b\n    address: 10.1.0.2\n{nic_b}    devices: {{0: 10.9.1.1}}\n"
            f"instances:\n  - name: m\n    framework: {framework}\n    processes: per_host\n    hosts: {hosts}\n"
            "    command: [serve]\n" + services)


def compile_(text: str, nics: dict[str, str] | None = None):
    return compile_source(load_yaml(text, "F"), None, compiled_check(), None, None, nics)


def errors(text: str, nics: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SpecErrors) as exc:
        compile_(text, nics)
    return [str(d) for d in exc.value.errors]


def env_of(result, owner: str = "m") -> dict[str, dict[str, str]]:
    return {hp.host.name: dict(p.env) for hp in result.plan.hosts for p in hp.programs if p.owner == owner}


def test_each_host_gets_its_own_interface_from_nic():
    env = env_of(compile_(topo("    nic: enp189s0f0\n", "    nic: eth7\n")))
    assert {h: [e[k] for k in IFNAMES] for h, e in env.items()} == {
        "a": ["enp189s0f0", "enp189s0f0", "=enp189s0f0"], "b": ["eth7", "eth7", "=eth7"]}


def test_the_lock_files_interface_is_used_and_the_topologys_nic_wins_over_it():
    env = env_of(compile_(topo(nic_b="    nic: bond0\n"), nics={"a": "ens3", "b": "ens9"}))
    assert env["a"]["GLOO_SOCKET_IFNAME"] == "ens3" and env["b"]["GLOO_SOCKET_IFNAME"] == "bond0"
    env = env_of(compile_(topo("    nic: discover\n", "    nic: discover\n"), nics={"a": "ens3", "b": "ens9"}))
    assert [env[h]["HCCL_SOCKET_IFNAME"] for h in "ab"] == ["=ens3", "=ens9"]


def test_the_topologys_env_wins():
    text = topo("    nic: eth0\n", "    nic: eth0\n", env="    GLOO_SOCKET_IFNAME: bond1\n    HCCL_SOCKET_IFNAME: bond\n")
    env = env_of(compile_(text))
    assert [env["b"][k] for k in IFNAMES] == ["bond1", "eth0", "bond"]


def test_a_topology_that_sets_all_three_needs_no_known_interface():
    """Existing topologies (one name in defaults.env) keep working."""
    text = topo(env="".join(f"    {k}: enp189s0f0\n" for k in IFNAMES))
    assert [env_of(compile_(text))["b"][k] for k in IFNAMES] == ["enp189s0f0"] * 3


def test_a_multi_node_instance_on_a_host_of_unknown_interface_is_refused_naming_the_host_and_the_fix():
    text = topo("    nic: eth0\n")
    assert errors(text) == [
        f"F:{line_of(text, 'hosts: [a, b]')}:16: error: instances[0].hosts[1]: instance m (vllm-ascend on 2 nodes) "
        "needs GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME, HCCL_SOCKET_IFNAME on host b, whose interface is not known: "
        "run `launcher discover F` (it reads the interface holding the host's address into the lock file) or set "
        "`nic: <interface>` on host b; or set them in env"]
    partly = errors(topo(env="    GLOO_SOCKET_IFNAME: eth0\n"))
    assert len(partly) == 2 and all("needs TP_SOCKET_IFNAME, HCCL_SOCKET_IFNAME on host" in e for e in partly)


def test_nic_discover_not_in_the_lock_file_yet_is_refused_at_the_key():
    text = topo("    nic: discover\n", "    nic: eth0\n")
    assert errors(text) == [f"F:{line_of(text, 'nic: discover')}:10: error: hosts[0].nic: host a: nic is left to "
                            "discovery and not in the lock file yet; run `launcher discover F`"]


@pytest.mark.parametrize("framework, hosts", [("atb", "[a, b]"), ("vllm-ascend", "[a]")])
def test_no_interface_is_needed_where_no_stack_reads_one_per_node(framework, hosts):
    """ATB / MindIE take HCCL's address from HCCL_IF_IP and the ranktable; one node has no cross-node socket."""
    text = topo(framework=framework, hosts=hosts).replace("    processes: per_host\n", "") \
        if framework == "atb" else topo(hosts=hosts)
    env = env_of(compile_(text))
    assert not any(k in e for e in env.values() for k in IFNAMES)
    env = env_of(compile_(text, nics={"a": "eth0", "b": "eth0"}))
    assert any("GLOO_SOCKET_IFNAME" in e for e in env.values()) == (framework == "vllm-ascend")


RAY = ("services:\n  - name: ray\n    kind: generic\n    hosts: [a, b]\n"
       "    env: {GLOO_SOCKET_IFNAME: \"{{ host.nic }}\", HCCL_SOCKET_IFNAME: \"={{ host.nic }}\"}\n"
       "    command: [ray, start, --block]\n")


def test_host_nic_placeholder_for_rays_services():
    result = compile_(topo("    nic: eth0\n", "    nic: ens5\n", services=RAY))
    assert {h: (e["GLOO_SOCKET_IFNAME"], e["HCCL_SOCKET_IFNAME"]) for h, e in env_of(result, "ray").items()} == {
        "a": ("eth0", "=eth0"), "b": ("ens5", "=ens5")}
    text = topo("    nic: eth0\n", "    nic: eth0\n", services=RAY).replace("    nic: eth0\n", "", 1)
    text = text.replace("framework: vllm-ascend", "framework: atb").replace("    processes: per_host\n", "")
    line = line_of(text, "    env: {GLOO")
    row = text.splitlines()[line - 1]
    fix = ("{{ host.nic }} on host a: its interface is not known; run `launcher discover F` (it reads the "
           "interface holding the host's address into the lock file) or set `nic: <interface>` on host a")
    gloo, hccl = row.index('"{{') + 1, row.index('"={{') + 1
    assert errors(text) == [f"F:{line}:{gloo}: error: services[0].env.GLOO_SOCKET_IFNAME: {fix}",
                            f"F:{line}:{hccl}: error: services[0].env.HCCL_SOCKET_IFNAME: {fix}"]


def test_the_lock_files_nics_round_trip_and_an_older_lock_file_has_none():
    text = lock_text({("a", 0): "10.9.0.1"}, None, {"b": "ens9", "a": "eth0"})
    assert "nics:\n  a: eth0\n  b: ens9\n" in text
    assert parse_nics(text, "t.lock.yaml") == {"a": "eth0", "b": "ens9"}
    assert parse_lock(text, "t.lock.yaml") == {("a", 0): "10.9.0.1"}
    older = lock_text({("a", 0): "10.9.0.1"})
    assert "nics" not in older and parse_nics(older, "t.lock.yaml") == {}
    with pytest.raises(SpecErrors, match="nics are not host -> interface name mappings"):
        parse_nics("version: 1\ndevices: {}\nnics: {a: [eth0]}\n", "t.lock.yaml")


def test_a_bad_nic_name_is_refused_by_the_schema():
    text = topo("    nic: eth0 eth1\n", "    nic: eth0\n")
    assert any("hosts[0].nic" in e for e in errors(text))
