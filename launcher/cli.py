"""Command line: parse arguments, call the pipeline, print for people or --json. No logic here."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, NoReturn, Sequence

from . import __version__
from .cliflags import check_flags

from .core.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput, LauncherError, SpecErrors
from .deploy.interrupt import deferred_sigint
from .core.pipeline import Result, compile_text, rendered
from .deploy.files import compile_file
from .core.table import format_table
from .core.probes import READY_TIMEOUT
from .deploy.records import DiffRow, DriftKind
from .offline import (cmd_pd_merge, cmd_plan, cmd_ranktable, cmd_render, cmd_schema, cmd_validate, plan_table, warn,
                      write)
from .statusview import drift_lines, status_json, status_table
from .eventscmd import add_events_flags, cmd_events

if TYPE_CHECKING:
    from .deploy.session import Session
    from .deploy.transport import SshOptions


def demo_text() -> str:
    return resources.files("launcher").joinpath("examples", "demo-local.yaml").read_text(encoding="utf-8")


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's first command: the embedded local demo, for real: up, every rank healthy, status, down."""
    import shutil
    import urllib.request

    from .deploy.apply import down, up
    from .deploy.session import Session
    from .deploy.status import status_rows

    work = tempfile.mkdtemp(prefix="ascend-launcher-demo-")
    result = compile_text(demo_text().replace("/tmp/ascend-launcher-demo", work), "demo-local.yaml (embedded)")
    warn(result)
    write(plan_table(result) + "\n")
    gen, files = rendered(result.plan)
    session = Session(result.plan)
    try:
        up(session, files, gen)
        ranks = [(hp.host.address, 18610 + p.local_rank, p.rank) for hp in result.plan.hosts for p in hp.programs
                 if p.local_rank is not None and p.rank is not None]  # the demo runs ranks only
        deadline = time.monotonic() + 60
        pending = set(ranks)
        while pending and time.monotonic() < deadline:
            for addr, port, rank in sorted(pending):
                try:
                    with urllib.request.urlopen(f"http://{addr}:{port}/health", timeout=1) as resp:
                        if resp.status == 200:
                            pending.discard((addr, port, rank))
                except OSError:
                    pass
            time.sleep(0.2)
        if pending:
            raise LauncherError(f"ranks {sorted(r for _, _, r in pending)} never became healthy; "
                                f"see the logs under {work}")
        write(f"\nall {len(ranks)} ranks passed their barrier and answer /health:\n")
        rows = status_rows(session)
        write(status_table(rows))
    finally:
        down(session, purge=True)
        session.close()
        shutil.rmtree(work, ignore_errors=True)
        write("\ndemo stopped and removed (launcher down --purge)\n")
    return EXIT_OK


def _session(args: argparse.Namespace, result: Result) -> Session:
    from .deploy.session import Session
    return Session(result.plan, forks=args.forks, ssh=ssh_options(args))


def _locked(session: Session, command: str) -> ContextManager[dict[str, Any]]:
    """The deployment lock lives on its first host."""
    from .deploy.lock import deployment_lock
    first = next(iter(session.clients.values()))
    return deployment_lock(first, command, warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))


def ssh_options(args: argparse.Namespace) -> SshOptions:
    from .deploy.transport import SshOptions
    return SshOptions(config_file=args.ssh_config, known_hosts=args.known_hosts, client=args.ssh_client)


def cmd_up(args: argparse.Namespace) -> int:
    from .deploy.apply import up
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
    from .deploy.status import diff
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
    from .core import preflight
    from .deploy.apply import run_preflight, tcp_matrix
    from .deploy.clocks import clock_report
    from .deploy.containers import container_report, report_lines
    result = compile_file(args.file)
    _, files = rendered(result.plan)
    with _session(args, result) as session:
        session.ensure_runtimes()
        checks, replies, bad = run_preflight(session)
        tcp = tcp_matrix(session)
        clocks = clock_report(session)
        boxes = container_report(session, files)
    skewed = [h for h, v in clocks.items() if not v.startswith(("ok", "off by"))]
    unrunnable = [h for h, r in boxes.items() if r["problems"]]
    # core.preflight.device_matrix reads the replies by HostCheck.key (a str), as run_preflight
    # returns them; its annotation says tuple keys
    matrix = preflight.device_matrix(result.plan, checks, replies)
    blocked = [k for k, v in tcp.items() if v.startswith("unreachable")]  # "unreachable (why)"
    if args.json:
        write(json.dumps({"ok": not bad and not blocked and not skewed and not unrunnable,
                           "devices": [{"host": h, "device": d, "result": r} for h, d, r in matrix],
                           "failures": bad, "tcp": tcp, "clocks": clocks, "containers": boxes,
                           "checks": replies}) + "\n")
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
    from .deploy.apply import down
    result = compile_file(args.file)
    with _session(args, result) as session, _locked(session, "down"):
        down(session, args.purge)
    write(f"down: {result.plan.deployment} stopped on {len(result.plan.hosts)} hosts"
           + (" and its files removed\n" if args.purge else "\n"))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .deploy.status import status_rows
    result = compile_file(args.file)
    desired, _ = rendered(result.plan)
    with _session(args, result) as session:
        rows = status_rows(session, desired)
    cut = {r.host: d.why for r in rows for d in r.drift if d.kind is DriftKind.UNREACHABLE}
    if cut:  # also on stderr, where every other command says a host could not be reached
        print(f"error: could not reach {len(cut)} host{'s' if len(cut) > 1 else ''}:\n"
              + "".join(f"  {h}: {why}\n" for h, why in cut.items()), end="", file=sys.stderr)
    if args.json:
        write(json.dumps([status_json(r) for r in rows]) + "\n")
    else:
        write(status_table(rows))
        reported: set[str] = set()
        for r in rows:
            if r.state == "FAILED" and r.detail and r.detail.reason and r.instance not in reported:
                reported.add(r.instance)
                write(f"\n{r.instance} FAILED: {r.detail.reason}; restart budget spent, stopped on all hosts\n")
                for line in r.detail.last_log[-10:]:
                    write(f"  | {line}\n")
        drift = drift_lines(rows)
        if drift:
            write(f"\ndrift (the topology wants generation {desired}):\n" + "".join(f"  {d}\n" for d in drift))
    # 0: every program runs as planned and answers its probe; 1: something does not
    healthy = all(r.state == "RUNNING" and not r.drift and r.ready is not False for r in rows)
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_restart(args: argparse.Namespace) -> int:
    from .deploy.apply import restart_instance
    result = compile_file(args.file)
    if args.rolling:
        from .deploy.rolling import rolling_restart
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
    with _session(args, result) as session:
        # where each log was read up to: after the first poll, only what came after it is asked for
        offsets: dict[str, dict[str, int]] = {}

        def poll(c: Any) -> dict[str, Any]:
            if c.name not in offsets:
                return c.call("logs", str(args.lines), *by_host[c.name])
            return c.call("logs", "0", *(f"{n}@{offsets[c.name][n]}" for n in by_host[c.name]))

        while True:
            replies = session.each("logs", poll, list(by_host))
            for h, reply in replies.items():
                for name, lines in reply["logs"].items():
                    for line in lines:
                        write(f"{h}/{name}| {line}\n")
                offsets[h] = reply["offsets"]
            if not args.follow:
                return EXIT_OK
            time.sleep(1.0)


def cmd_discover(args: argparse.Namespace) -> int:
    from .deploy.discover import discover
    from .core.lockfile import lock_path
    from .core.load import build_topology
    from .deploy.files import read_source, schema_check
    topo = build_topology(read_source(args.file), check=schema_check())
    facts, changed, problems, a3 = discover(topo, args.file, {"forks": args.forks, "ssh": ssh_options(args)})
    for where, why in sorted(problems.items()):
        what = "" if why.startswith("SuperPoD facts") or "Super Pod IDs" in why else "IP "
        print(f"{where}: {what}could not be read: {why}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} device(s) unreadable; {lock_path(args.file)} left as it was", file=sys.stderr)
        return EXIT_FAILED
    verb = "wrote" if changed else "unchanged:"
    extra = f", {len(a3.sdids)} SDIDs, {len(a3.pods)} SuperPoD ids" if a3.sdids or a3.pods else ""
    write(f"{verb} {lock_path(args.file)} ({len(facts)} device IPs{extra})\n")
    return EXIT_OK


def add_remote_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--forks", type=int, default=32, help="hosts contacted at once (default 32)")
    sp.add_argument("--ssh-config", metavar="FILE", help="ssh config to honour (default ~/.ssh/config)")
    sp.add_argument("--known-hosts", metavar="FILE", help="known_hosts to verify host keys against")
    sp.add_argument("--ssh-client", choices=("auto", "openssh", "paramiko"), default="auto",
                    help="OpenSSH (shared connections that outlive the command; default when installed) "
                         "or paramiko")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="launcher", description="Declarative launcher for multi-host Ascend "
               "inference: one YAML topology -> ranktables, env and supervised processes.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str, file: bool = True, json_flag: bool = False):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        # also after the command (`launcher up FILE -v`); SUPPRESS keeps a -v given before it
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors (every host's, and the host side's)")
        if file:
            sp.add_argument("file", metavar="FILE", help="topology YAML")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        sp.set_defaults(func=func)
        return sp

    add("validate", cmd_validate, "check a topology; every error with file:line:col", json_flag=True)
    add("plan", cmd_plan, "show hosts x instances x ranks x devices", json_flag=True)
    sp = add("render", cmd_render, "write every host's files into DIR/<host>/")
    sp.add_argument("-o", "--output", required=True, metavar="DIR")
    sp = add("ranktable", cmd_ranktable, "print one ranktable as JSON")
    sp.add_argument("--instance", metavar="NAME", help="this instance's table (PD: its local table)")
    sp.add_argument("--global", dest="global_group", nargs="?", const="", metavar="GROUP",
                    help="the PD global ranktable (of GROUP when there are several)")
    pd = sub.add_parser("pd-ranktable", help="PD ranktable tools (seed 002)")
    pd_sub = pd.add_subparsers(dest="pd_command", required=True, metavar="ACTION")
    mp = pd_sub.add_parser("merge", help="merge several hosts' global ranktables")
    mp.add_argument("files", nargs="+", metavar="FILE")
    mp.add_argument("--save-dir", metavar="DIR", help="write DIR/global_ranktable_merge.json (default: stdout)")
    mp.set_defaults(func=cmd_pd_merge)
    sp = add("up", cmd_up, "deploy a new generation and start what changed, as gangs", json_flag=True)
    sp.add_argument("--skip-preflight", action="store_true",
                    help="start instances without checking their HCCL links first (says so loudly)")
    sp.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT, metavar="S",
                    help=f"how long what others depend on may take to pass its probe (default {READY_TIMEOUT:g})")
    sp.add_argument("--strategy", choices=("auto", "rolling", "all"), default="auto",
                    help="how running instances that changed are restarted: rolling = K at a time, each ready "
                         "before the next; all = at once; auto (default) = rolling when they have a readiness "
                         "probe (they serve traffic), else all")
    sp.add_argument("--max-unavailable", type=int, default=1, metavar="K",
                    help="with the rolling strategy: instances down at once (default 1)")
    add_remote_flags(sp)
    sp = add("diff", cmd_diff, "what `up` would change per host and instance; changes nothing", json_flag=True)
    add_remote_flags(sp)
    sp = add("discover", cmd_discover, "read device IPs marked `discover` into the lock file beside FILE")
    add_remote_flags(sp)
    sp = add("check", cmd_check, "check HCCL links of every instance and TCP reachability of its ports",
             json_flag=True)
    add_remote_flags(sp)
    sp = add("down", cmd_down, "stop everything of the deployment")
    sp.add_argument("--purge", action="store_true", help="also remove its generations and logs on the hosts")
    add_remote_flags(sp)
    sp = add("status", cmd_status, "a table of every rank and service process", json_flag=True)
    add_remote_flags(sp)
    sp = add("restart", cmd_restart, "gang-restart one instance on all of its hosts, or roll through several",
             json_flag=True)
    sp.add_argument("--instance", action="append", metavar="NAME", help="the instance (repeat with --rolling)")
    sp.add_argument("--rolling", action="store_true", help="instance by instance, each ready before the next")
    sp.add_argument("--max-unavailable", type=int, default=1, metavar="K", help="instances down at once (default 1)")
    sp.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT, metavar="S",
                    help=f"how long an instance may take to pass its probe (default {READY_TIMEOUT:g})")
    add_remote_flags(sp)
    sp = add("logs", cmd_logs, "show program logs")
    sp.add_argument("--rank", type=int)
    sp.add_argument("--host")
    sp.add_argument("--instance")
    sp.add_argument("-n", "--lines", type=int, default=50)
    sp.add_argument("-f", "--follow", action="store_true")
    add_remote_flags(sp)
    sp = add("events", cmd_events, "every host's events in time order: starts, deaths, gang restarts, waits, ...",
             json_flag=True)
    add_events_flags(sp)
    add_remote_flags(sp)
    add("schema", cmd_schema, "print the topology JSON Schema", file=False)
    add("demo", cmd_demo, "run the embedded local demo: up, all ranks healthy, status, down", file=False)
    return p


MAX_SHOWN = 100  # past this, more lines hide rather than help


def _print_causes(exc: LauncherError) -> None:
    """Under -v: every host's failure with its traceback, and the host side's own when it sent one."""
    import traceback
    failures: dict[str, BaseException] = getattr(exc, "failures", None) or {}
    for host, cause in sorted(failures.items()):
        print(f"host {host}: " + "".join(traceback.format_exception(cause)), end="", file=sys.stderr)
    for host, cause in sorted(failures.items()) or [("", exc)]:
        remote = getattr(cause, "remote_traceback", None)
        if remote:
            print(f"host {getattr(cause, 'host', host)}: traceback on the host:\n{remote}", end="", file=sys.stderr)


def json_error(message: str, code: int, **more: Any) -> None:
    """A failed --json command's answer on stdout (the message also goes to stderr, for people):
    a script reads `ok`, `error` and `exit` (the process's exit code: 1 failed, 2 bad input)."""
    write(json.dumps({"ok": False, "error": message, "exit": code, **more}) + "\n")


@contextmanager
def handle_errors(verbose: bool, as_json: bool = False) -> Iterator[list[int]]:
    """Map errors to one clear message and a stable exit code (0 ok, 1 failed, 2 bad input);
    with ``as_json`` also a JSON error object on stdout."""
    code = [EXIT_OK]
    try:
        yield code
    except SpecErrors as exc:
        for d in exc.diagnostics[:MAX_SHOWN]:
            print(str(d), file=sys.stderr)
        if len(exc.diagnostics) > MAX_SHOWN:
            print(f"... and {len(exc.diagnostics) - MAX_SHOWN} more", file=sys.stderr)
        n = len(exc.errors)
        print(f"{n} error{'s' if n != 1 else ''}; nothing was changed", file=sys.stderr)
        code[0] = EXIT_BAD_INPUT
        if as_json:
            said = [str(d) for d in exc.diagnostics[:MAX_SHOWN]]
            json_error(said[0] if len(said) == 1 else f"{n} errors; nothing was changed", code[0], diagnostics=said)
    except LauncherError as exc:
        if as_json:
            hosts = {h: str(c) for h, c in sorted((getattr(exc, "failures", None) or {}).items())}
            json_error(str(exc), exc.exit_code, **({"hosts": hosts} if hosts else {}))
        if verbose:
            _print_causes(exc)
            raise
        print(f"error: {exc}", file=sys.stderr)
        code[0] = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code[0] = EXIT_FAILED
        if as_json:
            json_error("interrupted", code[0])


class Parser(argparse.ArgumentParser):
    """argparse, keeping its usage error's message (a subcommand's parser is one too): a --json
    command answers it as JSON as well."""

    last_error = "bad arguments"

    def error(self, message: str) -> NoReturn:
        Parser.last_error = message
        super().error(message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (exit 2); --help and --version exit 0
        if exc.code == EXIT_BAD_INPUT and "--json" in argv:
            json_error(Parser.last_error, EXIT_BAD_INPUT)
        raise
    with handle_errors(args.verbose, getattr(args, "json", False)) as code:
        check_flags(args)
        code[0] = args.func(args)
    return code[0]
