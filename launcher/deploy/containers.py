"""`check` for programs in containers: on every host that runs one, the engine and the image are there.

What a host lacks of the devices and driver paths a container gets is reported too (the runner
starts without them and says so in the program's log; `check` says it once per host).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from ..core.plan import File
from .session import Session


def specs_by_host(files: Mapping[str, Mapping[str, File]]) -> dict[str, list[dict[str, Any]]]:
    """host -> the container specs of its rendered generation (hosts with none left out)."""
    out = {}
    for host, host_files in files.items():
        specs = [json.loads(f.content) for path, f in host_files.items() if path.startswith("containers/")]
        if specs:
            out[host] = specs
    return out


def container_report(session: Session, files: Mapping[str, Mapping[str, File]]) -> dict[str, dict[str, Any]]:
    """host -> {"problems": [...], "notes": [...], "missing": [...]}; a host that did not answer has its
    error as a problem."""
    specs = specs_by_host(files)
    if not specs:
        return {}
    replies, failures = session.fan_out(
        lambda c: c.call("containercheck", stdin=json.dumps(specs[c.name]).encode()), sorted(specs))
    report: dict[str, dict[str, Any]] = {h: {"problems": r.get("problems", []), "notes": r.get("notes", []),
                                             "missing": r.get("missing", [])} for h, r in replies.items()}
    for h, exc in failures.items():
        report[h] = {"problems": [f"could not check: {getattr(exc, 'detail', exc)}"], "notes": [], "missing": []}
    return dict(sorted(report.items()))


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
