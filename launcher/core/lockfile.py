"""The device lock file: IPs read from the hosts by `launcher discover`, kept beside the
topology and committed with it, so expansion stays a pure function of files in git.

    topo.yaml  ->  topo.lock.yaml
"""
from __future__ import annotations

import os

import yaml

from .errors import Diagnostic, Loc, SpecErrors

HEADER = ("# Written by `launcher discover` from the hosts (hccn_tool -i N -ip -g, or DCMI).\n"
          "# Commit it with the topology; `launcher discover` rewrites it only when an IP changes.\n")

Facts = dict[tuple[str, int], str]


def lock_path(topology_path: str) -> str:
    base, ext = os.path.splitext(topology_path)
    return f"{base}.lock{ext or '.yaml'}"


def read_lock(topology_path: str) -> Facts:
    """(host, device id) -> IP from the lock file; {} when there is none."""
    path = lock_path(topology_path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", f"cannot read the lock file: {exc}")]) from None
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, dict):
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", "the lock file has no `devices:` mapping; "
                                                          "delete it and run `launcher discover` again")])
    return {(str(h), int(d)): str(ip) for h, ids in devices.items() for d, ip in (ids or {}).items()}


def lock_text(facts: Facts) -> str:
    hosts: dict[str, dict[int, str]] = {}
    for (host, dev), ip in sorted(facts.items()):
        hosts.setdefault(host, {})[dev] = ip
    return HEADER + yaml.safe_dump({"version": 1, "devices": hosts}, sort_keys=False)


def write_lock(topology_path: str, facts: Facts) -> bool:
    """Write the lock file if its content changes; True when it was (re)written."""
    path = lock_path(topology_path)
    text = lock_text(facts)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True
