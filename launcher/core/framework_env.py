"""What a ``framework:`` sets on each host: env, and for mindie-service a config.json.

mindie-service (MindIE-LLM's multi-node guide, reference §7.1):
- ``MIES_CONTAINER_IP`` = the host's ``container_ip`` when the instance's hosts have one (MindIE
  finds its own server by ``container_ip == MIES_CONTAINER_IP`` first); on bare metal (no host
  has one) ``HOST_IP`` = ``server_id`` (its second lookup), and the ranktable's ``container_ip``,
  which MindIE requires on every server, is the server_id, the host's own IP;
- ``HCCL_DETERMINISTIC=true`` as the guide advises (a user value wins);
- ``MIES_CONFIG_JSON_PATH`` = this generation's ``mindie/<instance>/config.json``: the user's base
  file with ``BackendConfig.multiNodesInferEnabled`` true, ``multiNodesInferPort`` and
  ``interNodeTLSEnabled`` set, ``ServerConfig.ipAddress`` = the server's own address (endpoint_ip:
  MindIE serves on 127.0.0.1 otherwise), mode 0640 like the ranktable; so one file per host.
vllm-ascend: ``HCCL_IF_IP`` = the host's address unless the topology sets it (frameworks.py
checks it is each node's own, not loopback); no ``RANK_TABLE_FILE``/``RANKTABLEFILE`` (table_env);
``GLOO_SOCKET_IFNAME``, ``TP_SOCKET_IFNAME`` (torch's gloo and TensorPipe: vLLM's CPU-side groups) and
``HCCL_SOCKET_IFNAME`` = the interface holding the host's address (socket_ifnames), as the tutorials
set them per node; where it is not known a multi-node instance is refused (nic_rules.py).
"""
from __future__ import annotations

import json
from typing import Any

from . import jsonfmt
from .model import Host, Instance

MINDIE = "mindie-service"
VLLM = "vllm-ascend"


def bare_metal(inst: Instance, hosts: list[Host]) -> bool:
    """A mindie-service instance none of whose hosts has a container_ip."""
    return inst.framework == MINDIE and not any(h.container_ip for h in hosts)


def container_ip(inst: Instance, host: Host) -> str | None:
    """What the instance's ranktable says is this server's container_ip."""
    if inst.framework == MINDIE and not host.container_ip:
        return host.server_id  # bare metal: the server is the host (frameworks.py: server_id is its IP)
    return host.container_ip


def socket_ifnames(nic: str) -> dict[str, str]:
    """The per-node interface variables of vllm-ascend's multi-node tutorials for interface ``nic``.
    HCCL's takes `=name` for exactly that name (a bare name is a prefix: eth1 would match eth10;
    HCCL envref 07_0075); gloo and TensorPipe take the name itself."""
    return {"GLOO_SOCKET_IFNAME": nic, "TP_SOCKET_IFNAME": nic, "HCCL_SOCKET_IFNAME": f"={nic}"}


SOCKET_IFNAMES = tuple(socket_ifnames("-"))


def defaults(inst: Instance, host: Host) -> dict[str, str]:
    """Env the framework advises; the topology's env may override it."""
    if inst.framework == MINDIE:
        return {"HCCL_DETERMINISTIC": "true"}
    if inst.framework == VLLM:
        return {"HCCL_IF_IP": host.address, **(socket_ifnames(host.nic) if host.nic else {})}
    return {}


def table_env(inst: Instance, table: str) -> dict[str, str]:
    """The ranktable variables a rank gets. None for vllm-ascend: torch_npu takes a valid
    RANK_TABLE_FILE as the switch to build HCCL communicators from the table, in the table's rank
    order, not vLLM's (dp_rank * world + rank); no vllm-ascend guide sets it. Its topology may ask
    for it with `RANK_TABLE_FILE: "{{ ranktable }}"`."""
    return {} if inst.framework == VLLM else {"RANKTABLEFILE": table, "RANK_TABLE_FILE": table}


def config_path(inst: Instance) -> str | None:
    """The generated config.json's path in the generation, if the framework has one."""
    return f"mindie/{inst.name}/config.json" if inst.framework == MINDIE else None


def identity(inst: Instance, host: Host, hosts: list[Host], config: str | None) -> dict[str, str]:
    """Env by which the stack finds its own server and config; set after the topology's env."""
    if inst.framework != MINDIE:
        return {}
    out = {"HOST_IP": host.server_id} if bare_metal(inst, hosts) else {"MIES_CONTAINER_IP": host.container_ip or ""}
    if config:
        out["MIES_CONFIG_JSON_PATH"] = config
    return out


def endpoint_ip(inst: Instance, host: Host) -> str:
    """Where this server's MindIE serves requests: its container IP, else the host's address.
    MindIE listens at ServerConfig.ipAddress (127.0.0.1 as shipped) unless MIES_CONTAINER_IP is
    set (server_config.cpp GetIPAddress): on bare metal the file must name the host."""
    return host.container_ip or host.address


def mindie_config(inst: Instance, base: bytes, endpoint: str) -> bytes:
    """The base config.json with MindIE's multi-node keys set (validated: a JSON object with a
    BackendConfig object, a ServerConfig object if any) and ServerConfig.ipAddress = ``endpoint``.
    Key order and every other value stay as the user wrote them."""
    assert inst.mindie is not None
    doc: dict[str, Any] = json.loads(base.decode("utf-8"))
    backend = doc["BackendConfig"]
    backend["multiNodesInferEnabled"] = True
    backend["multiNodesInferPort"] = inst.mindie.port
    backend["interNodeTLSEnabled"] = inst.mindie.inter_node_tls
    doc.setdefault("ServerConfig", {})["ipAddress"] = endpoint
    return jsonfmt.dumps_bytes(doc)
