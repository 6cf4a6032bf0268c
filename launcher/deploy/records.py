"""Typed records of what crosses the operator <-> host boundary: a host's state, status rows, drift.

A host answers `state` (and its agent writes state/snapshot.json) with one JSON object; it is
parsed here once, into a HostState, and the rest of the operator side reads fields, not keys.
A status row and its drift are records too: the CLI formats them for people and for --json.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping

from ..core.plan import File

ALIVE = frozenset({"STARTING", "RUNNING", "BACKOFF"})  # supervisord states of a program that runs


def owner_hashes(manifest: Mapping[str, Any] | None) -> dict[str, str]:
    """owner -> content hash of its files, from a generation's manifest.json."""
    return {p["owner"]: p["owner_hash"] for p in (manifest or {}).get("programs", [])}


def rendered_hashes(host_files: Mapping[str, File]) -> dict[str, str]:
    """owner -> content hash, of a host's rendered (not yet deployed) generation."""
    return owner_hashes(json.loads(host_files["manifest.json"].content))


@dataclass(frozen=True)
class ProgramState:
    """One program as supervisord on a host reports it."""

    name: str
    group: str
    state: str
    pid: int | None = None
    uptime: float | None = None
    exitstatus: int | None = None
    container: str | None = None        # the id of the container it runs (a short id); None: on the host
    container_state: str | None = None  # as the engine says: running, exited, ...

    @property
    def alive(self) -> bool:
        return self.state in ALIVE

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ProgramState:
        c = d.get("container") or {}
        return cls(d["name"], d["group"], d["state"], d.get("pid"), d.get("uptime"), d.get("exitstatus"),
                   c.get("id"), c.get("state"))


@dataclass(frozen=True)
class GangRecord:
    """The leader agent's record of a gang (state/gang.json): FAILED and why, restarts spent."""

    state: str | None = None
    restarts: int = 0
    reason: str | None = None
    last_log: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GangRecord:
        return cls(d.get("state"), d.get("restarts", 0), d.get("reason"), tuple(d.get("last_log", [])))


@dataclass(frozen=True)
class Started:
    """Which generation's config an owner was last started from (state/started.json)."""

    generation: str | None = None
    owner_hash: str | None = None


@dataclass(frozen=True)
class Waiting:
    """What an owner waits for before it starts (state/waiting.json), and why."""

    on: tuple[str, ...]
    reason: str
    since: float | None = None  # when the wait began (the host's clock, epoch seconds)


@dataclass(frozen=True)
class Orphan:
    """A process of a supervisord that is gone, still alive on its host (no one supervises it)."""

    pid: int
    pgid: int
    name: str   # its supervisord program
    group: str
    container: str | None = None  # a container left running (its runner or supervisord is gone)


def orphan_pids(orphans: tuple[Orphan, ...], program: str) -> tuple[int, ...]:
    """A program's orphaned pids, its own process (the group leader supervisord made it) first."""
    mine = [o for o in orphans if o.name == program]
    return tuple(o.pid for o in sorted(mine, key=lambda o: (o.pid != o.pgid, o.pid)))


def orphan_container(orphans: tuple[Orphan, ...], program: str) -> str | None:
    """The id of a container of ``program`` left running unsupervised, if there is one."""
    return next((o.container for o in orphans if o.name == program and o.container), None)


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


def _none() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class HostState:
    """A deployment's root on one host as its `state` reply (or its agent's snapshot) says."""

    root: str | None = None
    generation: str | None = None           # of `current`; None: nothing deployed
    supervisord: bool = False               # supervisord answers
    secret_id: str | None = None            # a hash of the agent key it holds
    runtime_missing: bool = False           # this launcher's runtime is not on the host yet
    hashes: Mapping[str, str] = field(default_factory=_none)  # owner -> hash of its files in the current generation
    programs: tuple[ProgramState, ...] = ()
    gangs: Mapping[str, GangRecord] = field(default_factory=_none)
    started: Mapping[str, Started] = field(default_factory=_none)
    waiting: Mapping[str, Waiting] = field(default_factory=_none)
    orphans: tuple[Orphan, ...] = ()        # supervisord is down and these of its processes live on

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostState:
        """Parse the host's reply; a host without any runtime yet answers only a few of the keys."""
        started = {o: Started(s.get("generation"), s.get("owner_hash"))
                   for o, s in (d.get("started") or {}).items() if s}
        waiting = {o: Waiting(tuple(w.get("on", [])), w.get("reason", ""), w.get("since"))
                   for o, w in (d.get("waiting") or {}).items() if w}
        return cls(root=d.get("root"), generation=d.get("generation"), supervisord=bool(d.get("supervisord")),
                   secret_id=d.get("secret_id"), runtime_missing=bool(d.get("runtime_missing")),
                   hashes=_frozen(owner_hashes(d.get("manifest"))),
                   programs=tuple(ProgramState.from_json(p) for p in d.get("programs") or []),
                   gangs=_frozen({g: GangRecord.from_json(r) for g, r in (d.get("gang") or {}).items()}),
                   started=_frozen(started), waiting=_frozen(waiting),
                   orphans=tuple(Orphan(o["pid"], o.get("pgid", o["pid"]), o.get("name", ""), o.get("group", ""),
                                        o.get("container")) for o in d.get("orphans") or []))

    @property
    def blank(self) -> bool:
        """Nothing of the deployment here: no generation, no supervisord (nothing to protect)."""
        return not self.generation and not self.supervisord

    def of(self, owner: str) -> list[ProgramState]:
        return [p for p in self.programs if p.group == owner]

    def alive(self, owner: str) -> bool:
        """Any program of ``owner`` runs here."""
        return any(p.alive for p in self.of(owner))

    def runs_older_config(self, owner: str, wanted: str | None) -> bool:
        """``owner`` was last started from a config other than the one hashed ``wanted``
        (an interrupted or stopped roll); False when no start is recorded."""
        started = self.started.get(owner)
        return started is not None and started.owner_hash not in (None, wanted)


class DriftKind(Enum):
    UNREACHABLE = "unreachable"    # the host did not answer: ``why``
    GENERATION = "generation"      # the host runs generation ``runs``; the topology renders ``wants``
    OLD_CONFIG = "old-config"      # runs the config of generation ``runs``; the host's ``wants`` changed it
    WAITING = "waiting"            # waits for ``on``: ``why``
    NOT_IN_PLAN = "not-in-plan"    # supervisord runs ``program`` (in ``state``), the plan does not have it
    ORPHANED = "orphaned"          # supervisord is down; ``program`` still runs as ``pids``, unsupervised


@dataclass(frozen=True)
class Drift:
    """How what runs differs from what the topology renders now (see DriftKind for the fields)."""

    kind: DriftKind
    why: str = ""
    runs: str | None = None
    wants: str | None = None
    on: tuple[str, ...] = ()
    program: str = ""
    state: str = ""
    pids: tuple[int, ...] = ()
    container: str | None = None

    @property
    def host_wide(self) -> bool:
        """About the whole host (said once per host), not about one owner on it."""
        return self.kind in (DriftKind.UNREACHABLE, DriftKind.GENERATION)


@dataclass(frozen=True)
class Detail:
    """What a reached host says of a program the plan has."""

    started_generation: str | None = None
    stale: bool = False                  # alive, but started from an older config of its owner
    exitstatus: int | None = None
    reason: str | None = None            # why its gang FAILED
    last_log: tuple[str, ...] = ()       # of a FAILED gang


@dataclass(frozen=True)
class StatusRow:
    """One program: what the plan expects joined with what runs on its host."""

    instance: str
    host: str
    rank: int | None
    program: str
    state: str
    pid: int | None = None
    uptime: float | None = None
    restarts: int = 0
    generation: str | None = None
    in_plan: bool = True
    drift: tuple[Drift, ...] = ()
    waiting_on: tuple[str, ...] = ()
    desired_generation: str | None = None
    detail: Detail | None = None         # None: the host was unreachable, or the plan has no such program
    container: str | None = None         # the container it runs in (short id), or an orphaned one
    container_state: str | None = None
    ready: bool | None = None            # answers its owner's probe on this host; None: no probe run
    probe_error: str | None = None       # what the probe saw when not ready
    waiting_since: float | None = None   # when its gang's wait began (the host's clock)

    @property
    def stale(self) -> bool:
        return self.detail is not None and self.detail.stale


@dataclass(frozen=True)
class DiffRow:
    """What `up` would do to one owner on one host."""

    host: str
    owner: str
    change: str
    generation: str | None
    new_generation: str
