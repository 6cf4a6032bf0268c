"""Readiness probes (http, tcp, command, log) and TCP reachability, run from this host."""
from __future__ import annotations

import json
import os
import socket
import time

from . import upload
from .state import read_gang_state, tail
from .supervisor_rpc import programs_info


def tcp_reach(targets: list[str], timeout: float = 3.0) -> dict[str, str]:
    """ADDR:PORT -> open / reachable / unreachable (why), every target at once: an unreachable
    one costs its timeout once, not once per target after it."""
    from concurrent.futures import ThreadPoolExecutor

    def one(target: str) -> str:
        addr, _, port = target.rpartition(":")
        try:
            with socket.create_connection((addr, int(port)), timeout=timeout):
                return "open"
        except ConnectionRefusedError:
            return "reachable"
        except OSError as exc:
            return f"unreachable ({exc.strerror or type(exc).__name__})"
    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(64, len(targets))) as pool:
        return dict(zip(targets, pool.map(one, targets)))


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
    """Wait up to TIMEOUT s (args[0]) until every probe (stdin: JSON list) passes; report each.
    A program of theirs that exits (or is started again, or stopped) meanwhile ends the wait at
    once: it will not become ready on its own, and its last log lines say why (`exited`)."""
    deadline = time.time() + float(args[0])
    specs = json.loads(upload.read_stdin() or b"[]")
    # (a one-round check, timeout 0, as `status` makes, has nothing to watch)
    watch = Watch(root, [p for s in specs for p in s.get("programs", [])]) if float(args[0]) > 0 else None
    last: dict[int, str | None] = {}
    exited = None
    while True:
        last = probe_all(root, specs)
        if all(v is None for v in last.values()) or time.time() >= deadline:
            break
        exited = watch.exited() if watch else None
        if exited:
            break
        time.sleep(min(spec.get("period", 1.0) for spec in specs) if specs else 0.5)
    reply: dict = {"ready": all(v is None for v in last.values()),
                   "probes": [{"probe": f"{s['kind']} {' '.join(s['target']) if s['kind'] == 'command' else s['target']}",
                               "error": last[i]} for i, s in enumerate(specs)]}
    if exited and not reply["ready"]:
        reply["exited"] = exited
    return reply


def probe_all(root: str, specs: list[dict]) -> dict[int, str | None]:
    """Every probe once, at the same time: a round costs the slowest probe's time, not their sum
    (a wedged etcd: its HTTP probe's and its etcdctl's timeouts one after the other)."""
    if len(specs) < 2:
        return {i: probe_once(root, spec) for i, spec in enumerate(specs)}
    import threading
    out: dict[int, str | None] = {}

    def one(i: int, spec: dict) -> None:
        out[i] = probe_once(root, spec)
    threads = [threading.Thread(target=one, args=(i, spec), daemon=True) for i, spec in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {i: out[i] for i in range(len(specs))}


EXITED = {"EXITED", "FATAL", "BACKOFF"}  # supervisord states of a program that ended on its own
ALIVE = {"STARTING", "RUNNING"}
LAST_LINES = 20


class Watch:
    """The programs a ready wait is about: one found ended on its own (EXITED, FATAL, BACKOFF:
    it will not pass the probe this run), or whose gang is FAILED, ends the wait at once. One its
    agent stopped and started again meanwhile does not: that is supervision at work (a gang
    restarted after supervisord died, say, as `up` started it), and the probe decides."""

    def __init__(self, root: str, programs: list[str]):
        self.root = root
        self.names = set(programs)
        self.first = self._look() if self.names else {}

    def _look(self) -> dict[str, dict]:
        return {p["name"]: p for p in programs_info(self.root) or [] if p["name"] in self.names}

    def exited(self) -> dict | None:
        """The program that ended (its state, exit code and last log lines), or None."""
        if not self.first:
            return None
        now = self._look()
        gone = [p for p in now.values() if p["state"] in EXITED]
        failed = {g: r for g, r in read_gang_state(self.root).items()
                  if g in {p["group"] for p in now.values()} and r.get("state") == "FAILED"}
        if not gone and not failed:
            return None
        if failed and not any(p["state"] in EXITED for p in gone):  # the leader's record says more
            group, rec = next(iter(failed.items()))
            return {"program": group, "state": "FAILED", "exitstatus": None, "reason": rec.get("reason"),
                    "log": list(rec.get("last_log") or [])[-LAST_LINES:]}
        p = gone[0]
        return {"program": p["name"], "state": p["state"], "exitstatus": p["exitstatus"], "reason": None,
                "log": tail(os.path.join(self.root, "logs", f"{p['name']}.log"), LAST_LINES)}
