"""The commands that only look at the hosts: `status` (once, or refreshing with --watch) and `logs`.

`status --watch` keeps one session (its SSH connections stay open) and shows a new table every
--interval seconds, like `watch` or `kubectl get -w`: on a terminal it redraws the screen, into a
pipe it writes one frame after another (with --json one JSON array per line). Ctrl-C ends it; the
exit code is the last frame's (0 every program runs as planned and answers its probe, 1 not).
`logs` over several programs merges their lines in time order (logmerge.py), prefixed host/program.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from ..core.errors import EXIT_FAILED, EXIT_OK, BadInput
from ..core.pipeline import rendered
from ..deploy.files import compile_file
from ..deploy.records import DriftKind
from .logmerge import merged
from .output import write
from .remote import _session
from .statusview import drift_lines, status_json, status_table

if TYPE_CHECKING:
    from ..deploy.records import StatusRow

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: what `watch` does between frames


def _unreachable(rows: list[StatusRow]) -> str:
    cut = {r.host: d.why for r in rows for d in r.drift if d.kind is DriftKind.UNREACHABLE}
    if not cut:
        return ""
    return f"error: could not reach {len(cut)} host{'s' if len(cut) > 1 else ''}:\n" \
        + "".join(f"  {h}: {why}\n" for h, why in cut.items())


def status_text(rows: list[StatusRow], desired: str) -> str:
    """The table, each FAILED instance's reason and last lines, and the drift."""
    out = [status_table(rows)]
    reported: set[str] = set()
    for r in rows:
        if r.state == "FAILED" and r.detail and r.detail.reason and r.instance not in reported:
            reported.add(r.instance)
            out.append(f"\n{r.instance} FAILED: {r.detail.reason}; restart budget spent, stopped on all hosts\n")
            out += [f"  | {line}\n" for line in r.detail.last_log[-10:]]
    drift = drift_lines(rows)
    if drift:
        out.append(f"\ndrift (the topology wants generation {desired}):\n" + "".join(f"  {d}\n" for d in drift))
    return "".join(out)


def healthy(rows: list[StatusRow]) -> int:
    ok = all(r.state == "RUNNING" and not r.drift and r.ready is not False for r in rows)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from ..deploy.status import status_rows
    result = compile_file(args.file)
    desired, _ = rendered(result.plan)
    with _session(args, result) as session:
        if args.watch:
            return _watch(args, lambda: status_rows(session, desired), desired)
        rows = status_rows(session, desired)
    if cut := _unreachable(rows):  # on stderr, where every other command says a host could not be reached
        print(cut, end="", file=sys.stderr)
    write(json.dumps([status_json(r) for r in rows]) + "\n" if args.json else status_text(rows, desired))
    return healthy(rows)


def _watch(args: argparse.Namespace, read: Any, desired: str) -> int:
    tty = sys.stdout.isatty() and not args.json
    code = EXIT_FAILED
    try:
        while True:
            started = time.monotonic()
            rows = read()
            code = healthy(rows)
            if args.json:
                write(json.dumps([status_json(r) for r in rows]) + "\n")
            else:
                head = f"Every {args.interval:g}s: launcher status {args.file}    {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
                write((CLEAR if tty else "") + head + _unreachable(rows) + status_text(rows, desired)
                      + ("" if tty else "\n"))
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:  # the way out of a watch, as in `watch`: not an error
        return code


def cmd_logs(args: argparse.Namespace) -> int:
    result = compile_file(args.file)
    programs = [(hp.host.name, p.name) for hp in result.plan.hosts for p in hp.programs
                if (args.host is None or hp.host.name == args.host) and (args.rank is None or p.rank == args.rank)
                and (args.instance is None or p.owner == args.instance)]
    if not programs:
        raise BadInput("no program matches --host/--rank/--instance")
    by_host: dict[str, list[str]] = {}
    for h, name in programs:
        by_host.setdefault(h, []).append(name)
    order = {f"{h}/{n}": i for i, (h, n) in enumerate(programs)}  # the plan's order, for equal times
    with _session(args, result) as session:
        # where each log was read up to: after the first poll, only what came after it is asked for
        offsets: dict[str, dict[str, int]] = {}

        def poll(c: Any) -> dict[str, Any]:
            if c.name not in offsets:
                return c.call("logs", str(args.lines), *by_host[c.name])
            return c.call("logs", "0", *(f"{n}@{offsets[c.name][n]}" for n in by_host[c.name]))

        while True:
            replies = session.each("logs", poll, list(by_host))
            logs = []
            for h, reply in replies.items():
                logs += [(f"{h}/{name}", lines) for name, lines in reply["logs"].items()]
                offsets[h] = reply["offsets"]
            logs.sort(key=lambda pl: order.get(pl[0], len(order)))
            for prefix, line in merged(logs, time.localtime().tm_year):
                write(f"{prefix}| {line}\n")
            if not args.follow:
                return EXIT_OK
            time.sleep(1.0)
