"""The commands that reach the hosts and change them: up, diff, check, down, restart, discover.

(status and logs, which only look: observe.py.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, ContextManager

from ..core.errors import EXIT_FAILED, EXIT_OK, BadInput
from ..core.pipeline import Result, rendered
from ..core.table import format_table
from ..deploy.files import compile_file
from ..deploy.interrupt import deferred_sigint
from ..deploy.records import DiffRow
from .output import warn, write

if TYPE_CHECKING:
    from ..deploy.fencing import Fence
    from ..deploy.session import Session
    from ..deploy.transport import SshOptions


def _session(args: argparse.Namespace, result: Result) -> Session:
    from ..deploy.session import Session
    return Session(result.plan, forks=args.forks, ssh=ssh_options(args))


def _locked(session: Session, command: str) -> ContextManager[Fence]:
    """The deployment lock lives on its first host; its fencing token goes with every host call."""
    from ..deploy.lock import fenced
    return fenced(session.clients, command, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr),
                  forks=session.forks)


def ssh_options(args: argparse.Namespace) -> SshOptions:
    from ..deploy.transport import SshOptions
    return SshOptions(config_file=args.ssh_config, known_hosts=args.known_hosts, client=args.ssh_client)


def cmd_up(args: argparse.Namespace) -> int:
    from ..deploy.apply import up
    result = compile_file(args.file)
    warn(result)
    gen, files = rendered(result.plan)
    with deferred_sigint() as intr, _session(args, result) as session, _locked(session, "up"):
        session.interrupt = intr
        report = up(session, files, gen, skip_preflight=args.skip_preflight, ready_timeout=args.ready_timeout,
                    strategy=args.strategy, max_unavailable=args.max_unavailable)
    if args.json:
        write(json.dumps({"generation": report.generation, "started": report.started,
                           "unchanged": report.unchanged, "skew_seconds": report.skew,
                           "refused": report.refused, "seconds": round(report.seconds, 3)}) + "\n")
    else:
        write(f"up: generation {report.generation} running on {len(files)} hosts "
               f"({len(report.started)} started, {len(report.unchanged)} unchanged"
               + (f", {len(report.refused)} refused by the link check" if report.refused else "")
               + f") in {report.seconds:.1f} s\n")
    return EXIT_FAILED if report.refused else EXIT_OK


def _diff_json(r: DiffRow) -> dict[str, Any]:
    return {"host": r.host, "owner": r.owner, "change": r.change, "generation": r.generation,
            "new_generation": r.new_generation}


def cmd_diff(args: argparse.Namespace) -> int:
    from ..deploy.status import diff
    result = compile_file(args.file)
    gen, files = rendered(result.plan)
    with _session(args, result) as session:
        rows = diff(session, files, gen)
    if args.json:
        write(json.dumps([_diff_json(r) for r in rows]) + "\n")
    else:
        write(format_table(("HOST", "OWNER", "CHANGE", "RUNNING GEN", "NEW GEN"),
                            [(r.host, r.owner, r.change, r.generation, r.new_generation) for r in rows]))
        n = sum(r.change != "none" for r in rows)
        write(f"{n} change{'s' if n != 1 else ''}; nothing was touched\n")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from ..core import preflight
    from ..deploy.check_all import run_check
    from ..deploy.containers import report_lines
    result = compile_file(args.file)
    _, files = rendered(result.plan)
    with _session(args, result) as session:
        found = run_check(session, files)
    bad, tcp, clocks, boxes = found.bad, found.tcp, found.clocks, found.containers
    skewed = [h for h, v in clocks.items() if not v.startswith(("ok", "off by"))]
    unrunnable = [h for h, r in boxes.items() if r["problems"]]
    matrix = preflight.device_matrix(result.plan, found.checks, found.replies)
    blocked = [k for k, v in tcp.items() if v.startswith("unreachable")]  # "unreachable (why)"
    if args.json:
        write(json.dumps({"ok": not bad and not blocked and not skewed and not unrunnable,
                           "devices": [{"host": h, "device": d, "result": r} for h, d, r in matrix],
                           "failures": bad, "tcp": tcp, "clocks": clocks, "containers": boxes,
                           "checks": found.replies}) + "\n")
    else:
        write(format_table(("HOST", "DEVICE", "LINKS"), matrix))
        if tcp:
            write("\n" + format_table(("FROM", "TO", "TCP"), [(k.split(" -> ")[0], k.split(" -> ")[1], v)
                                                              for k, v in sorted(tcp.items())]))
        write("\n" + format_table(("HOST", "CLOCK"), sorted(clocks.items())))
        if boxes:
            write("\n" + format_table(("HOST", "CONTAINERS"), report_lines(boxes)))
        for inst, lines in bad.items():
            write(f"\n{inst}: links NOT healthy:\n" + "".join(f"  {ln}\n" for ln in lines))
    return EXIT_FAILED if bad or blocked or skewed or unrunnable else EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from ..deploy.apply import down
    result = compile_file(args.file)
    with _session(args, result) as session, _locked(session, "down"):
        down(session, args.purge)
    write(f"down: {result.plan.deployment} stopped on {len(result.plan.hosts)} hosts"
           + (" and its files removed\n" if args.purge else "\n"))
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    from ..deploy.apply import restart_instance
    result = compile_file(args.file)
    if args.rolling:
        from ..deploy.rolling import rolling_restart
        names = args.instance or [i.name for i in result.plan.instances]
        with deferred_sigint() as intr, _session(args, result) as session, _locked(session, "restart --rolling"):
            session.interrupt = intr
            report = rolling_restart(session, names, args.max_unavailable, args.ready_timeout)
        if args.json:
            write(json.dumps({"restarted": report.restarted, "failed": report.failed, "reason": report.reason,
                               "untouched": report.untouched, "seconds": report.seconds}) + "\n")
        elif report.failed:
            write(f"rolling restart stopped: {report.failed} did not become ready ({report.reason}); "
                   f"untouched: {', '.join(report.untouched) or 'none'}\n")
        else:
            write(f"rolling restart: {', '.join(report.restarted)} restarted and ready, "
                   f"at most {args.max_unavailable} down at a time\n")
        return EXIT_FAILED if report.failed else EXIT_OK
    if not args.instance or len(args.instance) != 1:
        raise BadInput("restart needs one --instance NAME (or --rolling)")
    args.instance = args.instance[0]
    t0 = time.monotonic()
    with _session(args, result) as session, _locked(session, f"restart --instance {args.instance}"):
        skew = restart_instance(session, args.instance)
    if args.json:
        write(json.dumps({"ok": True, "restarted": [args.instance], "skew_seconds": round(skew, 6),
                          "seconds": round(time.monotonic() - t0, 3)}) + "\n")
    else:
        write(f"restart: {args.instance} restarted on all its hosts (start skew {skew * 1000:.0f} ms)\n")
    return EXIT_OK


def cmd_discover(args: argparse.Namespace) -> int:
    from ..deploy.discover import discover
    from ..core.lockfile import lock_path
    from ..core.load import build_topology
    from ..deploy.files import read_source, schema_check
    topo = build_topology(read_source(args.file), check=schema_check())
    facts, changed, problems, a3, nics = discover(topo, args.file, {"forks": args.forks, "ssh": ssh_options(args)})
    for where, why in sorted(problems.items()):
        what = "" if why.startswith("SuperPoD facts") or "Super Pod IDs" in why else "IP "
        print(f"{where}: {why}" if why.startswith("interface:") else f"{where}: {what}could not be read: {why}",
              file=sys.stderr)
    if problems:
        print(f"{len(problems)} device(s) or host(s) unreadable; {lock_path(args.file)} left as it was", file=sys.stderr)
        return EXIT_FAILED
    verb = "wrote" if changed else "unchanged:"
    extra = f", {len(a3.sdids)} SDIDs, {len(a3.pods)} SuperPoD ids" if a3.sdids or a3.pods else ""
    extra += f", {len(a3.nic_ips)} NIC IPs" if a3.nic_ips else ""
    extra += f", {len(nics)} interfaces" if nics else ""
    write(f"{verb} {lock_path(args.file)} ({len(facts)} device IPs{extra})\n")
    return EXIT_OK
