"""The device lock file (topo.lock.yaml): its name, its text, and parsing it back into facts.

It holds the IPs `launcher discover` read from the hosts, kept beside the topology and
committed with it, so expansion stays a pure function of files in git. Reading and writing
it is the operator side's (deploy.files).
"""
from __future__ import annotations

import os.path
from typing import Any

import yaml

from .errors import Diagnostic, Loc, SpecErrors
from .load import NicFacts, SuperPodFacts
from .yamlsrc import Source, format_path

HEADER = ("# Written by `launcher discover` from the hosts (hccn_tool -i N -ip -g, or DCMI).\n"
          "# Commit it with the topology; `launcher discover` rewrites it only when an IP changes.\n")

Facts = dict[tuple[str, int], str]


def lock_path(topology_path: str) -> str:
    """topo.yaml -> topo.lock.yaml"""
    base, ext = os.path.splitext(topology_path)
    return f"{base}.lock{ext or '.yaml'}"


class _Stream:
    """Text that PyYAML reads as it reads an open file: its error marks name the lock file
    (and quote no snippet), word for word what they said when yaml read the file itself."""

    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self._text = text
        self._at = 0

    def read(self, size: int = -1) -> str:
        end = len(self._text) if size < 0 else self._at + size
        chunk = self._text[self._at:end]
        self._at += len(chunk)
        return chunk


def _load(text: str, path: str) -> Any:
    """The lock file's YAML document ({} when empty); SpecErrors naming the file when it is not YAML."""
    try:
        return yaml.safe_load(_Stream(text, path)) or {}
    except yaml.YAMLError as exc:
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", f"cannot read the lock file: {exc}")]) from None


def parse_lock(text: str, path: str) -> Facts:
    """(host, device id) -> IP from the lock file's text; ``path`` names it in errors."""
    doc = _load(text, path)
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, dict):
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", "the lock file has no `devices:` mapping; "
                                                          "delete it and run `launcher discover` again")])
    src = Source(path, doc, yaml.compose(text))  # parsed once already: only for where a fault is
    facts: Facts = {}
    errors: list[Diagnostic] = []

    def bad(where: tuple[str, ...], message: str) -> None:
        errors.append(Diagnostic(src.value_loc(where) or Loc(path, 1, 1), format_path(where), message))

    for h, ids in devices.items():
        if ids is None:
            continue
        if not isinstance(ids, dict):
            bad(("devices", str(h)), "must map device ids to IPs (`0: 10.0.0.1`); delete the lock file "
                                     "and run `launcher discover` again")
            continue
        for d, ip in ids.items():
            if isinstance(d, bool) or not (isinstance(d, int) or isinstance(d, str) and d.isascii() and d.isdigit()):
                bad(("devices", str(h), str(d)), f"device id {d!r} is not a non-negative integer")
            elif not isinstance(ip, str):
                bad(("devices", str(h), str(d)), f"device {d}: the IP must be a string, not {ip!r:.40}")
            else:
                facts[(str(h), int(d))] = ip
    if errors:
        raise SpecErrors(errors)
    return facts


def parse_superpod(text: str, path: str) -> SuperPodFacts:
    """Atlas A3 facts of the lock file (`super_pods:`, `super_device_ids:`; absent: none)."""
    doc = _load(text, path)
    pods = doc.get("super_pods") or {} if isinstance(doc, dict) else {}
    sdids = doc.get("super_device_ids") or {} if isinstance(doc, dict) else {}
    nic_ips = doc.get("nic_ips") or {} if isinstance(doc, dict) else {}
    try:
        return SuperPodFacts({str(h): _pod_id(p) for h, p in pods.items()},
                             {(str(h), _integer(d)): _integer(s) for h, ids in sdids.items()
                              for d, s in (ids or {}).items()},
                             {(str(h), _integer(d)): _ip(ip) for h, ids in nic_ips.items()
                              for d, ip in (ids or {}).items()})
    except (AttributeError, TypeError, ValueError):
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", "the lock file's super_pods / super_device_ids / nic_ips "
                                                          "are not host -> id mappings; run `launcher discover` "
                                                          "again")]) from None


def parse_nics(text: str, path: str) -> NicFacts:
    """host -> the interface holding its address (`nics:`; absent: none, a lock file from before)."""
    doc = _load(text, path)
    nics = doc.get("nics") or {} if isinstance(doc, dict) else {}
    if not isinstance(nics, dict) or not all(isinstance(n, str) and n.isprintable() and " " not in n and n
                                             for n in nics.values()):
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", "the lock file's nics are not host -> interface name "
                                                          "mappings; run `launcher discover` again")])
    return {str(h): n for h, n in nics.items()}


def _integer(value: object) -> int:
    """An id as discover wrote it: an integer (or its digits), never 3.7 or true read as 3 or 1."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(value)


def _ip(value: object) -> str:
    """A NIC IP as discover wrote it: text."""
    if not isinstance(value, str) or not value:
        raise ValueError(value)
    return value


def _pod_id(value: object) -> str:
    """A SuperPoD id goes into ranktables: digits or a plain word, no control character."""
    text = str(_integer(value)) if not isinstance(value, str) else value
    if not text or not text.isprintable():
        raise ValueError(value)
    return text


def lock_text(facts: Facts, a3: SuperPodFacts | None = None, nics: NicFacts | None = None) -> str:
    """The lock file's content for these facts: hosts and devices in sorted order; the A3 sections
    only when there are A3 facts (an A2 lock file reads as before), `nics:` only when there are any."""
    hosts: dict[str, dict[int, str]] = {}
    for (host, dev), ip in sorted(facts.items()):
        hosts.setdefault(host, {})[dev] = ip
    doc: dict = {"version": 1, "devices": hosts}
    if a3 and a3.pods:
        doc["super_pods"] = dict(sorted(a3.pods.items()))
    if a3 and a3.sdids:
        sdids: dict[str, dict[int, int]] = {}
        for (host, dev), sdid in sorted(a3.sdids.items()):
            sdids.setdefault(host, {})[dev] = sdid
        doc["super_device_ids"] = sdids
    if a3 and a3.nic_ips:
        ips: dict[str, dict[int, str]] = {}
        for (host, dev), ip in sorted(a3.nic_ips.items()):
            ips.setdefault(host, {})[dev] = ip
        doc["nic_ips"] = ips
    with_a3 = len(doc) > 2
    if nics:
        doc["nics"] = dict(sorted(nics.items()))
    a3_note = "# Atlas A3: vnic IPs (hccn_tool -i N -vnic -g), SDIDs and pods (npu-smi info -t spod-info).\n"
    if a3 and a3.nic_ips:
        a3_note += "# nic_ips: the dies' RoCE NIC IPs (hccn_tool -i N -ip -g), for HCCL worlds across SuperPoDs.\n"
    nic_note = "# nics: the interface holding each host's address (GLOO/TP/HCCL_SOCKET_IFNAME).\n"
    return HEADER + (a3_note if with_a3 else "") + (nic_note if nics else "") + yaml.safe_dump(doc, sort_keys=False)
