"""framework: mindie-service: MindIE-LLM's multi-node rules refused at line:col, and what each host gets.

The rules (reference §7.1, from MindIE-LLM's ranktable_config.cpp and its multi-node guide):
2..60 servers, 1..32 devices on each and the same count everywhere, rank_id 0..511, a non-empty
container_ip on every server; its own server found by MIES_CONTAINER_IP (= container_ip) or HOST_IP
(= server_id); config.json through MIES_CONFIG_JSON_PATH, mode 0640, with multiNodesInferEnabled,
multiNodesInferPort and interNodeTLSEnabled in BackendConfig.
"""
from __future__ import annotations

import json

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.pipeline import compile_text, rendered
from launcher.core.schema import compiled_check
from tests.helpers import run_cli, write

BASE = json.dumps({"ServerConfig": {"port": 1025}, "BackendConfig": {"multiNodesInferEnabled": False,
                                                                      "npuDeviceIds": [[0, 1]]}}).encode()


def hosts_yaml(n: int, container: list[bool] | None = None, devices: int = 2) -> str:
    out = []
    for k in range(n):
        ci = f"    container_ip: 172.17.{k // 250}.{k % 250 + 1}\n" if container and container[k] else ""
        devs = ", ".join(f"{d}: 10.{k // 250}.{k % 250}.{d + 1}" for d in range(devices))
        out.append(f"  - name: n{k}\n    address: 10.200.{k // 250}.{k % 250 + 1}\n{ci}    devices: {{{devs}}}\n")
    return "".join(out)


def topo(n: int = 2, container: list[bool] | None = None, inst: str = "", devices: int = 2,
         mindie: str = "    mindie: {config: base.json}\n") -> str:
    names = ", ".join(f"n{k}" for k in range(n))
    return (f"version: 1\nname: t\nhosts:\n{hosts_yaml(n, container, devices)}instances:\n"
            f"  - name: svc\n    framework: mindie-service\n{mindie}    processes: per_host\n"
            f"    hosts: [{names}]\n    command: [mindieservice_daemon]\n{inst}")


def compile_(text: str, base: bytes | None = BASE):
    return compile_text(text, "F", check=compiled_check(), inputs={} if base is None else {"base.json": base})


def errors(text: str, base: bytes | None = BASE) -> list[str]:
    with pytest.raises(SpecErrors) as exc:
        compile_(text, base)
    return [str(d) for d in exc.value.errors]


def line_of(text: str, needle: str, nth: int = 0) -> int:
    lines = [k + 1 for k, ln in enumerate(text.splitlines()) if needle in ln]
    return lines[nth]


def test_one_server_is_not_multi_node():
    text = topo(1)
    assert any(e.startswith(f"F:{line_of(text, '    hosts: [')}:") and "2..60 servers, got 1" in e
               for e in errors(text))


def test_more_than_60_servers_are_refused():
    text = topo(61, devices=1)
    assert any("2..60 servers, got 61" in e for e in errors(text))


def test_rank_ids_above_511_are_refused():
    text = topo(33, devices=16)  # 528 ranks
    assert any("528 ranks; MindIE's rank_id is at most 511" in e for e in errors(text))
    compile_(topo(32, devices=16))  # 512 ranks: 0..511


def test_a_host_without_container_ip_when_the_others_have_one_is_refused_at_that_host():
    text = topo(3, container=[True, False, True])
    errs = errors(text)
    assert any(e.startswith(f"F:{line_of(text, 'name: n1')}:5: error: hosts[1]: host n1: no container_ip") for e in errs), errs


def test_one_daemon_per_server():
    text = topo().replace("    processes: per_host\n", "    processes: per_device\n")
    assert any("set processes: per_host" in e for e in errors(text))


def test_the_env_it_sets_cannot_be_set_by_hand():
    text = topo(inst="    env: {HOST_IP: 1.2.3.4}\n")
    assert any(e.startswith(f"F:{line_of(text, 'HOST_IP')}:") and "HOST_IP is set per host by framework" in e
               for e in errors(text))


@pytest.mark.parametrize("base, message", [
    (None, "cannot read base.json"),
    (b"{not json", "base.json is not JSON"),
    (b'{"ServerConfig": {}}', "base.json has no BackendConfig object"),
])
def test_the_base_config_must_be_a_mindie_config(base, message):
    text = topo()
    errs = errors(text, base)
    assert any(e.startswith(f"F:{line_of(text, 'mindie:')}:") and "mindie.config" in e and message in e
               for e in errs), errs


def test_inter_node_tls_needs_its_certificate_keys():
    text = topo(mindie="    mindie: {config: base.json, inter_node_tls: true}\n")
    assert any("has no BackendConfig.interNodeTlsCaPath, BackendConfig.interNodeTlsCaFiles" in e for e in errors(text))
    keys = {k: "x" for k in ("interNodeTlsCaPath", "interNodeTlsCaFiles", "interNodeTlsCert", "interNodeTlsPk")}
    compile_(text, json.dumps({"BackendConfig": keys}).encode())


def test_mindie_key_without_the_framework_and_framework_without_mindie_key():
    text = topo().replace("    framework: mindie-service\n", "")
    assert any("`mindie:` needs framework: mindie-service" in e for e in errors(text))
    assert any("needs `mindie: {config: <base config.json>}`" in e for e in errors(topo(mindie="")))


def env_of(files, host: str, owner: str = "svc") -> dict[str, str]:
    import shlex
    out = {}
    for line in files[host][f"env/{owner}.env"].content.decode().splitlines():
        if line.startswith("export "):
            key, _, value = line[7:].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def test_containers_get_mies_container_ip_bare_metal_gets_host_ip():
    _, files = rendered(compile_(topo(2, container=[True, True])).plan)
    env = env_of(files, "n1")
    assert env["MIES_CONTAINER_IP"] == "172.17.0.2" and "HOST_IP" not in env
    result = compile_(topo(2))
    _, files = rendered(result.plan)
    env = env_of(files, "n1")
    assert env["HOST_IP"] == "10.200.0.2" and "MIES_CONTAINER_IP" not in env
    table = json.loads(files["n1"]["ranktables/svc.json"].content)
    # MindIE wants a container_ip on every server; on bare metal the server is the host
    assert [s["container_ip"] for s in table["server_list"]] == [s["server_id"] for s in table["server_list"]]


def test_each_host_gets_its_config_json_with_the_multi_node_keys():
    result = compile_(topo(inst="    env: {HCCL_DETERMINISTIC: \"false\"}\n",
                           mindie="    mindie: {config: base.json, port: 2222}\n"))
    _, files = rendered(result.plan)
    for hp in result.plan.hosts:
        env = env_of(files, hp.host.name)
        rel = env["MIES_CONFIG_JSON_PATH"].split("/current/", 1)[1]
        assert env["MIES_CONFIG_JSON_PATH"] == f"{hp.root}/current/{rel}"
        f = files[hp.host.name][rel]
        assert f.mode == 0o640
        doc = json.loads(f.content)
        assert doc["BackendConfig"] == {"multiNodesInferEnabled": True, "npuDeviceIds": [[0, 1]],
                                        "multiNodesInferPort": 2222, "interNodeTLSEnabled": False}
        # MindIE serves at ServerConfig.ipAddress unless MIES_CONTAINER_IP is set: the host's own
        assert doc["ServerConfig"] == {"port": 1025, "ipAddress": hp.host.address}
        assert env["HCCL_DETERMINISTIC"] == "false"  # advised, not imposed
    _, files = rendered(compile_(topo()).plan)
    assert env_of(files, "n0")["HCCL_DETERMINISTIC"] == "true"


def test_a_server_config_that_is_not_an_object_is_refused():
    with pytest.raises(SpecErrors) as exc:
        compile_text(topo(), "F", check=compiled_check(),
                     inputs={"base.json": b'{"ServerConfig": [], "BackendConfig": {}}'})
    assert "base.json: ServerConfig is not an object" in str(exc.value)


def test_the_cli_reads_the_base_file_beside_the_topology(tmp_path):
    path = write(tmp_path, topo())
    run = run_cli("validate", path)
    assert run.code == 2 and "mindie.config: cannot read base.json" in run.err
    (tmp_path / "base.json").write_bytes(BASE)
    run = run_cli("validate", path)
    assert run.code == 0, run.err
