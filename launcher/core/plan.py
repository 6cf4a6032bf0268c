"""The frozen output model: what expansion decided, per host and per instance.

Immutable all the way down, so a Plan is hashable and no consumer can change what another
one reads: tuples instead of lists, FrozenMap instead of dict, and JSON documents (ranktables)
as JsonDoc, the canonical bytes a host receives (jsonfmt), parsed afresh by whoever needs the
value. Bytes rather than a frozen tree of JSON values: the file's bytes exist anyway (expand
serializes each document once), equality and hashing are a bytes compare, and `launcher
ranktable` prints exactly what the hosts get.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from .model import Container, Env, Host, Limits, Probe
from .placement import ServicePort


K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only, hashable mapping that keeps insertion order (equal only with the same order)."""

    __slots__ = ("_items", "_index")
    _items: tuple[tuple[K, V], ...]
    _index: Mapping[K, V]

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        index = dict(items)
        object.__setattr__(self, "_items", tuple(index.items()))
        object.__setattr__(self, "_index", MappingProxyType(index))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"FrozenMap is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"FrozenMap is immutable (cannot delete {name})")

    def __getitem__(self, key: K) -> V:
        return self._index[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self._items) == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self._items)!r})"

    def __reduce__(self) -> tuple[type[FrozenMap[K, V]], tuple[tuple[tuple[K, V], ...]]]:
        return (type(self), (self._items,))  # copy and pickle rebuild it (setattr refuses)


@dataclass(frozen=True, slots=True)
class JsonDoc:
    """A JSON document held as its canonical bytes (jsonfmt.dumps_bytes, what a host receives)."""

    text: bytes

    def value(self) -> Any:
        """A fresh copy of the document (dicts and lists the caller may change)."""
        return json.loads(self.text)


@dataclass(frozen=True, slots=True, init=False)
class File:
    """A file of a generation, path relative to the generation directory."""

    path: str
    content: bytes
    mode: int = 0o644

    def __init__(self, path: str, content: bytes, mode: int = 0o644) -> None:
        f = _FILE_FIELDS  # as Program's (a 16k-rank plan renders 12k files)
        f[0](self, path)
        f[1](self, content)
        f[2](self, mode)


@dataclass(frozen=True, slots=True, init=False)
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
    container: Container | None = None    # None: runs on the host

    def __init__(self, name: str, host: str, owner: str, kind: str, argv: tuple[str, ...], cwd: str | None,
                 env: Env, limits: Limits, numa_via_numactl: bool, probe: Probe | None = None,
                 rank: int | None = None, local_rank: int | None = None, devices: tuple[int, ...] = (),
                 ports: tuple[ServicePort, ...] = (), container: Container | None = None) -> None:
        # each field through its slot's descriptor: the generated __init__ calls object.__setattr__
        # per field, twice the cost (a 16k-rank plan makes 16k Programs)
        f = _PROGRAM_FIELDS
        f[0](self, name)
        f[1](self, host)
        f[2](self, owner)
        f[3](self, kind)
        f[4](self, argv)
        f[5](self, cwd)
        f[6](self, env)
        f[7](self, limits)
        f[8](self, numa_via_numactl)
        f[9](self, probe)
        f[10](self, rank)
        f[11](self, local_rank)
        f[12](self, devices)
        f[13](self, ports)
        f[14](self, container)


@dataclass(frozen=True, slots=True, init=False)
class RankInfo:
    rank: int
    host: str
    local_rank: int
    device_id: int
    device_ip: str

    def __init__(self, rank: int, host: str, local_rank: int, device_id: int, device_ip: str) -> None:
        f = _RANK_FIELDS  # as Program's
        f[0](self, rank)
        f[1](self, host)
        f[2](self, local_rank)
        f[3](self, device_id)
        f[4](self, device_ip)


def _setters(cls: type) -> tuple[Any, ...]:
    """Each field's slot setter, in field order (the order of the hand-written __init__'s lines)."""
    return tuple(getattr(cls, f.name).__set__ for f in fields(cls))


_FILE_FIELDS = _setters(File)
_PROGRAM_FIELDS = _setters(Program)
_RANK_FIELDS = _setters(RankInfo)


@dataclass(frozen=True, slots=True)
class InstancePlan:
    name: str
    role: str
    world_size: int
    hosts: tuple[str, ...]
    ranks: tuple[RankInfo, ...]
    master: str                  # MASTER_ADDR:MASTER_PORT
    ranktable_path: str          # absolute path on each host of the instance
    ranktable: JsonDoc           # the table every rank of this instance reads


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
    pd_global: Mapping[str, JsonDoc]      # PD group name -> global ranktable (a FrozenMap)
    agent_port: int = 29390               # TCP port of each host's agent (gang restarts across hosts)
    preflight: bool = True                # check HCCL links before starting an instance
    restart_max: int = 3                  # gang restarts allowed ...
    restart_window: float = 600.0         # ... within this many seconds; past it: FAILED
    links: tuple[tuple[str, tuple[LinkMember, ...]], ...] = ()  # LLM-DataDist domains (name, members)
    depends: Mapping[str, tuple[str, ...]] = FrozenMap()  # owner -> what it waits for (a FrozenMap)
    restart_with: Mapping[str, tuple[str, ...]] = FrozenMap()  # instance -> what it restarts after (restart_with:)
    metrics_port: int | None = 29391      # each agent's Prometheus endpoint; None: none
    metrics_listen: str = "address"       # where: the host's address, loopback, any, or an IPv4

    def __post_init__(self) -> None:
        # a caller may hand in plain dicts (deploy.discover builds a Plan of hosts only): freeze them
        for name in ("pd_global", "depends", "restart_with"):
            value = getattr(self, name)
            if not isinstance(value, FrozenMap):
                object.__setattr__(self, name, FrozenMap(value))

    def instance(self, name: str) -> InstancePlan | None:
        return next((i for i in self.instances if i.name == name), None)
