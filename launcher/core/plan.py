"""The frozen output model: what expansion decided, per host and per instance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import Env, Host, Limits, Probe
from .placement import ServicePort


@dataclass(frozen=True, slots=True)
class File:
    """A file of a generation, path relative to the generation directory."""

    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Program:
    """One supervised process on one host: a rank, a per-host rank leader, or a service."""

    name: str          # unique on its host; the supervisor program name
    host: str
    owner: str         # instance or service name
    kind: str          # "rank" | "service"
    argv: tuple[str, ...]
    cwd: str | None
    env: Env
    limits: Limits
    numa_via_numactl: bool  # False when the program takes NUMA flags itself (dscli)
    probe: Probe | None = None
    rank: int | None = None
    local_rank: int | None = None
    devices: tuple[int, ...] = ()
    ports: tuple[ServicePort, ...] = ()   # a service's listening ports (placement.service_ports)


@dataclass(frozen=True, slots=True)
class RankInfo:
    rank: int
    host: str
    local_rank: int
    device_id: int
    device_ip: str


@dataclass(frozen=True, slots=True)
class InstancePlan:
    name: str
    role: str
    world_size: int
    hosts: tuple[str, ...]
    ranks: tuple[RankInfo, ...]
    master: str                  # MASTER_ADDR:MASTER_PORT
    ranktable_path: str          # absolute path on each host of the instance
    ranktable: dict[str, Any]    # the table every rank of this instance reads (never mutated)


@dataclass(frozen=True, slots=True)
class LinkMember:
    """One LLM-DataDist cluster of a link (communication domain)."""

    cluster_id: int
    role: str            # prompt | decoder
    instance: str
    host: str
    device_id: int
    device_ip: str
    listen: str | None   # ip:port the prompt side listens on


@dataclass(frozen=True, slots=True)
class HostPlan:
    host: Host
    root: str                    # <deploy_dir>/<deployment>; generations live under it
    programs: tuple[Program, ...]
    files: tuple[File, ...]      # documents (ranktables, options); render() adds launch files


@dataclass(frozen=True, slots=True)
class Plan:
    deployment: str
    hosts: tuple[HostPlan, ...]
    instances: tuple[InstancePlan, ...]
    levels: tuple[tuple[str, ...], ...]   # start order: names in level k wait for levels < k
    pd_global: dict[str, dict[str, Any]]  # PD group name -> global ranktable
    agent_port: int = 29390               # TCP port of each host's agent (gang restarts across hosts)
    preflight: bool = True                # check HCCL links before starting an instance
    restart_max: int = 3                  # gang restarts allowed ...
    restart_window: float = 600.0         # ... within this many seconds; past it: FAILED
    links: tuple[tuple[str, tuple[LinkMember, ...]], ...] = ()  # LLM-DataDist domains (name, members)
    depends: dict[str, tuple[str, ...]] = field(default_factory=dict)  # owner -> what it waits for

    def instance(self, name: str) -> InstancePlan | None:
        return next((i for i in self.instances if i.name == name), None)
