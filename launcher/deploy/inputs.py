"""Files a topology names besides itself (a MindIE base config.json), read for the pure core.

Paths are relative to the topology file's directory (absolute ones as they are). A file that
cannot be read is left out: validation then says so at the key that names it.
"""
from __future__ import annotations

import os
from typing import Any

MAX_INPUT = 10 * 1024 * 1024  # MindIE reads a config.json of at most 10 MB


def named_files(data: Any) -> list[str]:
    """The paths a parsed topology names: instances[].mindie.config."""
    out = []
    for inst in (data.get("instances") or []) if isinstance(data, dict) else []:
        mindie = inst.get("mindie") if isinstance(inst, dict) else None
        if isinstance(mindie, dict) and isinstance(mindie.get("config"), str):
            out.append(mindie["config"])
    return out


def read_inputs(data: Any, topology_path: str) -> dict[str, bytes]:
    """path as written -> bytes, for every named file that could be read."""
    base = os.path.dirname(os.path.abspath(topology_path))
    out: dict[str, bytes] = {}
    for name in named_files(data):
        try:
            with open(os.path.join(base, os.path.expanduser(name)), "rb") as fh:
                body = fh.read(MAX_INPUT + 1)
        except OSError:
            continue
        if len(body) <= MAX_INPUT:
            out[name] = body
    return out
