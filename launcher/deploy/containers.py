"""`check` for programs in containers: on every host that runs one, the engine and the image are there.

What a host lacks of the devices and driver paths a container gets is reported too (the runner
starts without them and says so in the program's log; `check` says it once per host).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..core.plan import File


def specs_by_host(files: Mapping[str, Mapping[str, File]]) -> dict[str, list[dict[str, Any]]]:
    """host -> the container specs of its rendered generation (hosts with none left out)."""
    out = {}
    for host, host_files in files.items():
        specs = [json.loads(f.content) for path, f in host_files.items() if path.startswith("containers/")]
        if specs:
            out[host] = specs
    return out


def report_lines(report: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(host, line) rows for the `check` table: problems first, then what runs without."""
    rows = []
    for host, r in report.items():
        rows += [(host, f"FAIL: {p}") for p in r["problems"]]
        rows += [(host, note) for note in r["notes"]]
        if r["missing"]:
            rows.append((host, f"runs without (not on this host): {', '.join(r['missing'])}"))
        if not r["problems"] and not r["notes"] and not r["missing"]:
            rows.append((host, "ok"))
    return rows
