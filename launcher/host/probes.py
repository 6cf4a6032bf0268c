"""Readiness probes (http, tcp, command, log) and TCP reachability, run from this host."""
from __future__ import annotations

import json
import os
import socket
import time

from . import upload
from .state import tail


def act_tcpcheck(root: str, args: list[str]) -> dict:
    """Can this host open TCP to each ADDR:PORT? refused = reachable (nothing listens yet)."""
    out = {}
    for target in args:
        addr, _, port = target.rpartition(":")
        try:
            with socket.create_connection((addr, int(port)), timeout=3):
                out[target] = "open"
        except ConnectionRefusedError:
            out[target] = "reachable"
        except OSError as exc:
            out[target] = f"unreachable ({exc.strerror or type(exc).__name__})"
    return {"tcp": out}


def probe_once(root: str, spec: dict) -> str | None:
    """None when the probe passes, else what it saw."""
    import subprocess
    import urllib.request
    kind, target = spec["kind"], spec["target"]
    try:
        if kind == "http":
            with urllib.request.urlopen(target, timeout=spec.get("timeout", 5)) as resp:
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        if kind == "tcp":
            addr, _, port = target.rpartition(":")
            with socket.create_connection((addr, int(port)), timeout=spec.get("timeout", 5)):
                return None
        if kind == "command":
            proc = subprocess.run(target, capture_output=True, timeout=spec.get("timeout", 5))
            said = " / ".join(ln.strip() for ln in (proc.stderr or proc.stdout).decode("utf-8", "replace")
                              .strip().splitlines() if ln.strip())
            return None if proc.returncode == 0 else f"exit {proc.returncode}: {said[-300:] or '-'}"
        if kind == "log":
            import re
            pattern = re.compile(target)
            for program in spec.get("programs", []):
                if any(pattern.search(line) for line in tail(os.path.join(root, "logs", f"{program}.log"), 200)):
                    return None
            return f"no log line matches {target!r} yet"
    except Exception as exc:  # a probe that cannot connect is simply not ready
        return f"{type(exc).__name__}: {exc}"
    return f"unknown probe {kind}"


def act_probe(root: str, args: list[str]) -> dict:
    """Wait up to TIMEOUT s (args[0]) until every probe (stdin: JSON list) passes; report each."""
    deadline = time.time() + float(args[0])
    specs = json.loads(upload.read_stdin() or b"[]")
    last: dict[int, str | None] = {}
    while True:
        last = {i: probe_once(root, spec) for i, spec in enumerate(specs)}
        if all(v is None for v in last.values()) or time.time() >= deadline:
            break
        time.sleep(min(spec.get("period", 1.0) for spec in specs) if specs else 0.5)
    return {"ready": all(v is None for v in last.values()),
            "probes": [{"probe": f"{s['kind']} {' '.join(s['target']) if s['kind'] == 'command' else s['target']}",
                        "error": last[i]} for i, s in enumerate(specs)]}
