"""Ranktable documents, key for key as the seeds show them; every value is a string.

- HCCL ranktable v1.0 (seed 004 / seed 001): server_count, server_list, status, version.
- PD global ranktable (seed 002): 3 server groups (0 scheduler, 1 prefill, 2 decode),
  rank_id restarting at 0 per instance; local ranktable per instance (group_id "0");
  the `_host` entry file; and merge of several global tables.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Sequence

from .errors import BadInput

VERSION = "1.0"
STATUS = "completed"


@dataclass(frozen=True, slots=True, init=False)
class RankSlot:
    """One rank as a ranktable sees it."""

    server_id: str
    device_id: int
    device_ip: str
    rank_id: int
    container_ip: str | None = None
    server_ip: str | None = None  # PD dialect only
    super_device_id: int | None = None  # Atlas A3 (ranktable v1.2) only
    super_pod_id: str | None = None     # Atlas A3 only
    host_ip: str | None = None          # v1.2 server entries' host_ip (an IP, or left out)

    def __init__(self, server_id: str, device_id: int, device_ip: str, rank_id: int, container_ip: str | None = None,
                 server_ip: str | None = None, super_device_id: int | None = None, super_pod_id: str | None = None,
                 host_ip: str | None = None) -> None:
        # each field through its slot's descriptor: the generated __init__ calls object.__setattr__
        # per field, twice the cost (16k slots for a 16k-rank plan)
        f = _FIELDS
        f[0](self, server_id)
        f[1](self, device_id)
        f[2](self, device_ip)
        f[3](self, rank_id)
        f[4](self, container_ip)
        f[5](self, server_ip)
        f[6](self, super_device_id)
        f[7](self, super_pod_id)
        f[8](self, host_ip)


_FIELDS = tuple(getattr(RankSlot, f.name).__set__ for f in fields(RankSlot))  # in the order __init__ sets them


def _servers(slots: Iterable[RankSlot], with_server_ip: bool) -> list[dict[str, Any]]:
    """Group consecutive slots of one server into one entry, keeping rank order."""
    out: list[dict[str, Any]] = []
    current: str | None = None
    for s in slots:
        if s.server_id != current:
            current = s.server_id
            entry: dict[str, Any]
            if with_server_ip:
                entry = {"server_id": s.server_id, "server_ip": s.server_ip or s.server_id, "device": []}
            else:
                entry = {"device": [], "server_id": s.server_id}
                if s.container_ip:
                    entry["container_ip"] = s.container_ip
            out.append(entry)
        out[-1]["device"].append({"device_id": str(s.device_id), "device_ip": s.device_ip,
                                  "rank_id": str(s.rank_id)})
    return out


def hccl_v1(slots: Sequence[RankSlot]) -> dict[str, Any]:
    """HCCL ranktable v1.0 in seed 004's key order."""
    servers = _servers(slots, with_server_ip=False)
    return {"server_count": str(len(servers)), "server_list": servers, "status": STATUS, "version": VERSION}


def pd_server_entries(slots: Sequence[RankSlot]) -> list[dict[str, Any]]:
    return _servers(slots, with_server_ip=True)


def pd_global(scheduler: dict[str, str], prefill: Sequence[Sequence[RankSlot]],
              decode: Sequence[Sequence[RankSlot]]) -> dict[str, Any]:
    """Global table: group 0 the scheduler, 1 every prefill instance, 2 every decode instance."""
    def group(gid: str, instances: Sequence[Sequence[RankSlot]]) -> dict[str, Any]:
        servers = [e for inst in instances for e in pd_server_entries(inst)]
        return {"group_id": gid, "server_count": str(len(servers)), "server_list": servers}
    return {"version": VERSION, "status": STATUS, "server_group_list": [
        {"group_id": "0", "server_count": "1", "server_list": [dict(scheduler)]},
        group("1", prefill), group("2", decode)]}


def pd_local(slots: Sequence[RankSlot]) -> dict[str, Any]:
    """Local table of one P or D instance; seed 002 uses group_id "0" for it."""
    servers = pd_server_entries(slots)
    return {"version": VERSION, "status": STATUS, "group_id": "0", "server_count": str(len(servers)),
            "server_list": servers}


def pd_host_entry(scheduler: dict[str, str]) -> dict[str, Any]:
    """The `_host` file: the API entry server, in local-table form (content not shown in seed 002)."""
    return {"version": VERSION, "status": STATUS, "group_id": "0", "server_count": "1",
            "server_list": [dict(scheduler)]}


def pd_merge(tables: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge several global tables (name, table) in order: server lists are concatenated per group.

    The scheduler group must end up with exactly one distinct server. Raises BadInput.
    """
    groups: dict[str, list[dict[str, Any]]] = {"0": [], "1": [], "2": []}
    for name, table in tables:
        sgl = table.get("server_group_list") if isinstance(table, dict) else None
        if not isinstance(sgl, list) or len(sgl) != 3:
            raise BadInput(f"{name}: not a PD global ranktable (server_group_list must hold 3 groups)")
        for g in sgl:
            gid = str(g.get("group_id")) if isinstance(g, dict) else None
            if gid not in groups or not isinstance(g.get("server_list"), list):
                raise BadInput(f"{name}: unexpected server group {g!r:.60}")
            for k, server in enumerate(g["server_list"]):
                if not isinstance(server, dict) or not isinstance(server.get("server_id"), str):
                    raise BadInput(f"{name}: group {gid} server {k}: must be an object with a server_id, "
                                   f"not {server!r:.60}")
                if gid == "0" and server in groups["0"]:
                    continue  # the same scheduler named by several hosts' tables
                groups[gid].append(server)
    if len(groups["0"]) != 1:
        ids = [s.get("server_id") for s in groups["0"]]
        raise BadInput(f"merged table needs exactly one scheduler (group 0), found {len(ids)}: {ids}")
    return {"version": VERSION, "status": STATUS, "server_group_list": [
        {"group_id": gid, "server_count": str(len(servers)), "server_list": servers}
        for gid, servers in groups.items()]}
