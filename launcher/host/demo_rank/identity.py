"""A demo rank's first act: who it is (its env) and whether its ranktable, once completed, agrees."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import EnvError, TableError
from .net import Log

COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this rank is, as its environment says."""

    rank: int
    local_rank: int
    world_size: int
    ranktable: str
    ranktable_var: str
    device_id: int
    server_id: str
    device_ip: str
    master_addr: str
    master_port: int
    instance: str
    host: str


def uint(raw: str) -> int | None:
    """A plain decimal non-negative integer, or None (int() would also take ' 3', '+3', '3_0')."""
    return int(raw) if raw.isascii() and raw.isdigit() else None


def parse_env(env: Mapping[str, str]) -> Identity:
    """Read the rank's identity from `env`; raise EnvError naming every bad variable."""
    problems: list[str] = []

    def text(name: str) -> str:
        raw = env.get(name)
        if raw is None:
            problems.append(f"{name} is not set")
            return ""
        if not raw.strip():
            problems.append(f"{name} is empty")
            return ""
        return raw

    def number(name: str, low: int = 0, high: int | None = None) -> int:
        raw = text(name)
        if not raw:
            return -1
        value = uint(raw)
        if value is None or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            problems.append(f"{name}={raw!r} is not an integer {span}")
            return -1
        return value

    rank = number("RANK")
    local_rank = number("LOCAL_RANK")
    world_size = number("WORLD_SIZE", low=1)
    # RANKTABLEFILE is what the launcher sets; RANK_TABLE_FILE is the name HCCL tools use.
    table_var = "RANKTABLEFILE" if env.get("RANKTABLEFILE", "").strip() else "RANK_TABLE_FILE"
    ranktable = env.get(table_var, "")
    if not ranktable.strip():
        problems.append("RANKTABLEFILE (or RANK_TABLE_FILE) is not set")
    device_id = number("DEVICE_ID")
    server_id = text("LAUNCHER_SERVER_ID")
    device_ip = text("LAUNCHER_DEVICE_IP")
    master_addr = text("MASTER_ADDR")
    master_port = number("MASTER_PORT", low=1, high=65535)
    instance = text("LAUNCHER_INSTANCE")
    host = text("LAUNCHER_HOST")
    if rank >= 0 and world_size >= 1 and rank >= world_size:
        problems.append(f"RANK={rank} is out of range for WORLD_SIZE={world_size} (expected 0..{world_size - 1})")
    if problems:
        raise EnvError("environment: " + "; ".join(problems))
    return Identity(rank, local_rank, world_size, ranktable, table_var, device_id, server_id, device_ip,
                    master_addr, master_port, instance, host)


@dataclass(frozen=True, slots=True)
class TableSlot:
    """One device entry of a ranktable, with where it was found."""

    where: str
    server_id: str
    device_id: str
    device_ip: str
    rank_id: str


def _string(entry: Mapping[str, Any], key: str, where: str) -> str:
    """The string at entry[key]; ranktables hold every value as a string."""
    if key not in entry:
        raise TableError(f"ranktable {where}: {key} is missing")
    value = entry[key]
    if not isinstance(value, str):
        raise TableError(f"ranktable {where}.{key}: expected a string, found {value!r}")
    return value


def table_slots(doc: Any) -> list[TableSlot]:
    """Flatten an HCCL v1.0 or PD local table into device entries in list order; raise TableError."""
    if not isinstance(doc, dict):
        raise TableError(f"ranktable: expected a JSON object, found {type(doc).__name__}")
    if "server_list" not in doc:
        hint = (" (a PD global table; the rank needs its instance's local table)"
                if "server_group_list" in doc else "")
        raise TableError(f"ranktable has no server_list{hint}")
    servers = doc["server_list"]
    if not isinstance(servers, list) or not servers:
        raise TableError(f"ranktable server_list: expected a non-empty list, found {servers!r:.80}")
    count = doc.get("server_count")
    if count is not None and count != str(len(servers)):
        raise TableError(f"ranktable server_count: expected {str(len(servers))!r} "
                         f"(entries in server_list), found {count!r}")
    slots: list[TableSlot] = []
    for i, server in enumerate(servers):
        where = f"server_list[{i}]"
        if not isinstance(server, dict):
            raise TableError(f"ranktable {where}: expected an object, found {server!r:.80}")
        server_id = _string(server, "server_id", where)
        if "server_ip" in server:  # PD local tables carry it; when present it must be a string too
            _string(server, "server_ip", where)
        devices = server.get("device")
        if not isinstance(devices, list):
            raise TableError(f"ranktable {where}.device: expected a list, found {devices!r:.80}")
        for j, dev in enumerate(devices):
            dwhere = f"{where}.device[{j}]"
            if not isinstance(dev, dict):
                raise TableError(f"ranktable {dwhere}: expected an object, found {dev!r:.80}")
            slots.append(TableSlot(dwhere, server_id, _string(dev, "device_id", dwhere),
                                   _string(dev, "device_ip", dwhere), _string(dev, "rank_id", dwhere)))
    return slots


def check_table(doc: Any, ident: Identity) -> TableSlot:
    """Return this rank's entry of a completed table; raise TableError on any disagreement."""
    slots = table_slots(doc)
    if len(slots) != ident.world_size:
        raise TableError(f"ranktable holds {len(slots)} devices, expected {ident.world_size} (WORLD_SIZE)")
    seen: dict[tuple[str, str], str] = {}
    for k, slot in enumerate(slots):
        if slot.rank_id != str(k):
            raise TableError(f"ranktable {slot.where}.rank_id: expected {str(k)!r} (rank ids run "
                             f"0..{ident.world_size - 1} across servers in list order), found {slot.rank_id!r}")
        key = (slot.server_id, slot.device_id)
        if key in seen:
            raise TableError(f"ranktable {slot.where}: device {slot.device_id} of server {slot.server_id} "
                             f"is listed twice (also at {seen[key]})")
        seen[key] = slot.where
    mine = slots[ident.rank]
    wrong = [f"{name}: expected {want!r} ({var}), found {got!r}"
             for name, var, want, got in (("server_id", "LAUNCHER_SERVER_ID", ident.server_id, mine.server_id),
                                          ("device_id", "DEVICE_ID", str(ident.device_id), mine.device_id),
                                          ("device_ip", "LAUNCHER_DEVICE_IP", ident.device_ip, mine.device_ip))
             if want != got]
    if wrong:
        raise TableError(f"ranktable entry of rank {ident.rank} ({mine.where}) disagrees with the env: "
                         + "; ".join(wrong))
    return mine


def load_table(path: str, var: str, timeout: float, log: Log) -> Any:
    """Read the table, polling until its status is "completed"; raise EnvError or TableError."""
    deadline = time.monotonic() + timeout
    last_note = ""
    while True:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise EnvError(f"{var}={path}: no such file") from None
        except OSError as exc:
            raise EnvError(f"{var}={path}: cannot read: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
        except ValueError as exc:  # a writer that does not rename atomically may be half way
            note = f"not valid JSON ({exc})"
        else:
            if not isinstance(doc, dict) or doc.get("status") == COMPLETED:
                return doc  # a non-object gets its message from check_table
            note = f"status is {doc.get('status')!r}, expected {COMPLETED!r}"
        now = time.monotonic()
        if now >= deadline:
            raise TableError(f"ranktable {path}: {note} after waiting {timeout:g} s")
        if note != last_note:
            log(f"ranktable {path}: {note}; waiting up to {timeout:g} s")
            last_note = note
        time.sleep(min(0.2, deadline - now))
