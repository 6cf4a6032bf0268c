"""The demo rank's --mindie and --vllm-dp readings refuse what MindIE and vLLM refuse (reference §7.1, §7.2)."""
from __future__ import annotations

import copy
import json
import os

import pytest

from launcher.host.demo_rank import mindie, vllm
from launcher.host.demo_rank.errors import EnvError, TableError


def table(servers: int = 2, devices: int = 2) -> dict:
    return {"server_count": str(servers), "status": "completed", "version": "1.0", "server_list": [
        {"server_id": f"10.0.0.{s + 1}", "container_ip": f"172.17.0.{s + 1}",
         "device": [{"device_id": str(d), "device_ip": f"10.9.{s}.{d + 1}", "rank_id": str(s * devices + d)}
                    for d in range(devices)]} for s in range(servers)]}


def broken(edit) -> dict:
    doc = copy.deepcopy(table())
    edit(doc)
    return doc


@pytest.mark.parametrize("doc, message", [
    (table(1), "server_count '1' is not a string of 2..60"),
    (broken(lambda t: t.update(server_count=2)), "server_count 2 is not a string"),
    (broken(lambda t: t.update(server_count="3")), "server_count 3 but 2 servers listed"),
    (broken(lambda t: t["server_list"][1].pop("container_ip")), "server '10.0.0.2' has no container_ip"),
    (broken(lambda t: t["server_list"][1]["device"].pop()), "different device counts [1, 2]"),
    (broken(lambda t: t["server_list"][0]["device"][0].update(device_id="64")), "device_id '64'"),
    (broken(lambda t: t["server_list"][0]["device"][0].update(rank_id="512")), "rank_id '512'"),
    (broken(lambda t: t["server_list"][0]["device"][0].update(device_ip="-.-.-.-")), "device_ip '-.-.-.-'"),
])
def test_mindies_rank_table_rules(doc, message):
    with pytest.raises(TableError) as exc:
        mindie.check_servers(doc)
    assert message in str(exc.value)


def test_own_server_by_container_ip_first_then_host_ip():
    servers = mindie.check_servers(table())
    assert mindie.own_server(servers, {"MIES_CONTAINER_IP": "172.17.0.2", "HOST_IP": "10.0.0.1"}) == \
        (1, "MIES_CONTAINER_IP")
    assert mindie.own_server(servers, {"HOST_IP": "10.0.0.1"}) == (0, "HOST_IP")
    with pytest.raises(EnvError):
        mindie.own_server(servers, {"HOST_IP": "10.0.0.9"})


def test_file_mode_and_symlink_checks(tmp_path):
    f = tmp_path / "t.json"
    f.write_text(json.dumps(table()))
    os.chmod(f, 0o640)
    mindie.check_file(str(f), "RANK_TABLE_FILE", {})
    os.chmod(f, 0o660)
    with pytest.raises(TableError, match="mode 0660"):
        mindie.check_file(str(f), "RANK_TABLE_FILE", {})
    mindie.check_file(str(f), "RANK_TABLE_FILE", {"MINDIE_CHECK_INPUTFILES_PERMISSION": "0"})
    (tmp_path / "link").symlink_to(f)
    with pytest.raises(TableError, match="is a symlink"):
        mindie.check_file(str(tmp_path / "link"), "RANK_TABLE_FILE", {"MINDIE_CHECK_INPUTFILES_PERMISSION": "0"})


DP = ["--data-parallel-size", "4", "--data-parallel-size-local", "2", "--data-parallel-address", "127.0.0.1",
      "--data-parallel-rpc-port", "13389"]


@pytest.mark.parametrize("extra, message", [
    (["--headless"], "--headless on the first node"),
    (["--data-parallel-start-rank", "2"], "--data-parallel-start-rank 2 without --headless"),
    (["--headless", "--data-parallel-start-rank", "1"], "--data-parallel-start-rank 1 is not a multiple of 2"),
])
def test_vllm_dp_rules(extra, message):
    with pytest.raises(EnvError, match=message):
        vllm.identity(DP + extra, {"HCCL_IF_IP": "127.0.0.1"})


def test_vllm_dp_node_index_and_world():
    ident, doc = vllm.identity(DP + ["--headless", "--data-parallel-start-rank", "2"], {"HCCL_IF_IP": "127.0.0.1"})
    assert (ident.rank, ident.world_size, ident.master_addr, ident.master_port) == (1, 2, "127.0.0.1", 13389)
    assert doc["dp_ranks"] == [2, 3] and not doc["serves_api"]
