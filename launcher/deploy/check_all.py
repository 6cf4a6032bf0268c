"""`check` across the hosts: every probe of every host at once, one host-side call per host.

Each host gets one `check` call (host/checkall.py) carrying its link checker runs, its TCP
targets and its container specs; the parts run concurrently there. The clock is read with `date`
over its own session at the same time (a reading taken inside the longer call would be off by
half of it). A host without this launcher's runtime gets it first, in the same fan-out. What
comes back is what `check` prints: the link findings per instance, the TCP matrix, the clocks
and the container report.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

from ..core import preflight
from ..core.plan import File
from .apply import link_failures, tcp_targets
from .clocks import clock_report
from .containers import specs_by_host
from .remote import HostClient
from .session import Session

CHECK_TIMEOUT = 300.0  # s: the slowest part (a checker run with its own per-tool timeouts) bounds it


@dataclass(frozen=True)
class CheckReport:
    checks: list[preflight.HostCheck]
    replies: dict[str, dict[str, Any]]     # HostCheck.key -> the checker's reply
    bad: dict[str, list[str]]              # instance -> failure lines
    tcp: dict[str, str]                    # "HOST -> ADDR:PORT" -> open / reachable / unreachable (why)
    clocks: dict[str, str]                 # host -> verdict
    containers: dict[str, dict[str, Any]]  # host -> problems, notes, missing


def payloads(session: Session, files: Mapping[str, Mapping[str, File]]
             ) -> tuple[list[preflight.HostCheck], dict[str, dict[str, Any]]]:
    """The plan's link checks, and per host the document its `check` call gets."""
    checks = preflight.checks_for(session.plan)
    targets = tcp_targets(session.plan)
    boxes = specs_by_host(files)
    docs: dict[str, dict[str, Any]] = {name: {"links": [], "tcp": targets.get(name, []), "containers": boxes.get(name)}
                                       for name in session.clients}
    for chk in checks:
        docs[chk.host]["links"].append({"args": list(chk.tool_args), "spec": chk.spec})
    return checks, docs


def _call(client: HostClient, doc: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps(doc).encode()
    reply = client.call("check", stdin=body, timeout=CHECK_TIMEOUT)
    if reply.get("runtime_missing"):  # a host this launcher never reached: ship the runtime, ask again
        client.call("install-runtime", stdin=client.runtime.tar)
        reply = client.call("check", stdin=body, timeout=CHECK_TIMEOUT)
    return reply


def run_check(session: Session, files: Mapping[str, Mapping[str, File]]) -> CheckReport:
    """Everything `check` asks of the hosts, all at once; HostsFailed when a host cannot be asked."""
    checks, docs = payloads(session, files)
    with ThreadPoolExecutor(max_workers=1) as side:
        clocks = side.submit(clock_report, session)  # its own sessions, beside the checks
        answers = session.each("check", lambda c: _call(c, docs[c.name]))
        clock_verdicts = clocks.result()
    replies: dict[str, dict[str, Any]] = {}
    at: dict[str, int] = {}
    for chk in checks:
        i = at[chk.host] = at.get(chk.host, -1) + 1
        reply = answers[chk.host]["links"][i]
        if "error" in reply:
            reply = {"report": None, "stderr": reply["error"], "exit": None}
        replies[chk.key] = reply
    bad = link_failures(session.plan, checks, replies)
    tcp: dict[str, str] = {}
    for host in docs:
        part = answers[host]["tcp"]
        for target in docs[host]["tcp"]:
            tcp[f"{host} -> {target}"] = part["tcp"][target] if "tcp" in part else f"unreachable ({part['error']})"
    boxes: dict[str, dict[str, Any]] = {}
    for host in sorted(h for h in docs if docs[h]["containers"]):
        part = answers[host].get("containers", {})
        if "error" in part:
            boxes[host] = {"problems": [f"could not check: {part['error']}"], "notes": [], "missing": []}
        else:
            boxes[host] = {k: part.get(k, []) for k in ("problems", "notes", "missing")}
    return CheckReport(checks, replies, bad, tcp, clock_verdicts, boxes)
