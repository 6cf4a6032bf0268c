"""HCCL ranktable v1.2 (Atlas A3 / 910_93 SuperPoD), key for key as the official A3 guide orders it.

hicann/hccl rank_table_config_a3.md: status, version, server_count, server_list[{server_id,
host_ip, device[{device_id, super_device_id, device_ip, rank_id}]}], super_pod_list[{super_pod_id,
server_list[{server_id}]}]; every value a string. Without super_device_id HCCL falls back to
"AI server mode" and LLM-DataDist's link() over HCCS times out (ASCEND_REFERENCE §1.3).
The PD tables keep their seed-002 shape and gain the A3 keys MindIE-MS reads (§2.2).
"""
from __future__ import annotations

import ipaddress
from typing import Any, Sequence

from .ranktable import STATUS, RankSlot

VERSION_12 = "1.2"


def _device(s: RankSlot) -> dict[str, str]:
    if s.super_device_id is None or s.super_pod_id is None:
        raise ValueError(f"rank {s.rank_id} on {s.server_id}: no SuperPoD facts (expand a validated topology)")
    return {"device_id": str(s.device_id), "super_device_id": str(s.super_device_id),
            "device_ip": s.device_ip, "rank_id": str(s.rank_id)}


def _servers(slots: Sequence[RankSlot], pd: bool) -> list[dict[str, Any]]:
    """Consecutive slots of one server make one entry, in rank order."""
    out: list[dict[str, Any]] = []
    for s in slots:
        if not out or out[-1]["server_id"] != s.server_id:
            entry: dict[str, Any] = {"server_id": s.server_id}
            if pd:
                entry["server_ip"] = s.server_ip or s.server_id
            if s.host_ip:
                entry["host_ip"] = s.host_ip
            if s.container_ip and not pd:
                entry["container_ip"] = s.container_ip
            entry["device"] = []
            out.append(entry)
        out[-1]["device"].append(_device(s))
    return out


def super_pod_list(slots: Sequence[RankSlot]) -> list[dict[str, Any]]:
    """Pods in order of first appearance, each with its servers in order (validate keeps a pod's
    servers together, as HCCL requires)."""
    pods: dict[str, list[str]] = {}
    for s in slots:
        servers = pods.setdefault(str(s.super_pod_id), [])
        if s.server_id not in servers:
            servers.append(s.server_id)
    return [{"super_pod_id": pod, "server_list": [{"server_id": sid} for sid in servers]}
            for pod, servers in pods.items()]


def hccl_v12(slots: Sequence[RankSlot]) -> dict[str, Any]:
    servers = _servers(slots, pd=False)
    return {"status": STATUS, "version": VERSION_12, "server_count": str(len(servers)), "server_list": servers,
            "super_pod_list": super_pod_list(slots)}


def pd_local_v12(slots: Sequence[RankSlot]) -> dict[str, Any]:
    """A PD instance's local table: what its ranks' HCCL reads through RANK_TABLE_FILE, so v1.2 on A3."""
    servers = _servers(slots, pd=True)
    return {"version": VERSION_12, "status": STATUS, "group_id": "0", "server_count": str(len(servers)),
            "server_list": servers, "super_pod_list": super_pod_list(slots)}


def pd_global_v12(scheduler: dict[str, str], prefill: Sequence[Sequence[RankSlot]],
                  decode: Sequence[Sequence[RankSlot]]) -> dict[str, Any]:
    """Global table of an A3 PD group: seed 002's three groups, each server group with the per-device
    super_device_id and the per-group super_pod_list of MindIE-MS's A3 table, version "1.2"."""
    def group(gid: str, instances: Sequence[Sequence[RankSlot]]) -> dict[str, Any]:
        servers = [e for inst in instances for e in _servers(inst, pd=True)]
        return {"group_id": gid, "server_count": str(len(servers)), "server_list": servers,
                "super_pod_list": super_pod_list([s for inst in instances for s in inst])}
    return {"version": VERSION_12, "status": STATUS, "server_group_list": [
        {"group_id": "0", "server_count": "1", "server_list": [dict(scheduler)]},
        group("1", prefill), group("2", decode)]}


def host_ip(address: str) -> str | None:
    """host_ip must be an IP when present (HCCL's parser); a DNS name is left out."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
