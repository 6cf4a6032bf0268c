"""The argument parser: every command, its flags and their help."""
from __future__ import annotations

import argparse
from typing import NoReturn

from .. import __version__
from ..core.defaults import READY_TIMEOUT
from .events import add_events_flags
from .export import add_export


class _Command:
    """A command's handler, imported when it runs: a command pays for its own modules only (the
    export's Kubernetes objects, the demo, ... cost every other command's start otherwise)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, args: argparse.Namespace) -> int:
        import importlib
        func = getattr(importlib.import_module(self.module, __package__), self.name)
        return int(func(args))


cmd_demo = _Command(".demo", "cmd_demo")
cmd_events = _Command(".events", "cmd_events")
cmd_pd_merge, cmd_plan, cmd_ranktable, cmd_render, cmd_schema, cmd_validate = (
    _Command(".offline", n) for n in ("cmd_pd_merge", "cmd_plan", "cmd_ranktable", "cmd_render", "cmd_schema",
                                      "cmd_validate"))
cmd_logs, cmd_status = (_Command(".observe", n) for n in ("cmd_logs", "cmd_status"))
cmd_check, cmd_diff, cmd_discover, cmd_down, cmd_restart, cmd_up = (
    _Command(".remote", n) for n in ("cmd_check", "cmd_diff", "cmd_discover", "cmd_down", "cmd_restart", "cmd_up"))


class Parser(argparse.ArgumentParser):
    """argparse, keeping its usage error's message (a subcommand's parser is one too): a --json
    command answers it as JSON as well."""

    last_error = "bad arguments"

    def error(self, message: str) -> NoReturn:
        Parser.last_error = message
        super().error(message)


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
    add_export(sub)
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
    sp.add_argument("-w", "--watch", action="store_true",
                    help="show it again every --interval seconds until Ctrl-C (one JSON array per line with --json)")
    sp.add_argument("--interval", type=float, default=2.0, metavar="S", help="with --watch: seconds between two (default 2)")
    add_remote_flags(sp)
    sp = add("restart", cmd_restart, "gang-restart one instance on all of its hosts, or roll through several",
             json_flag=True)
    sp.add_argument("--instance", action="append", metavar="NAME", help="the instance (repeat with --rolling)")
    sp.add_argument("--rolling", action="store_true", help="instance by instance, each ready before the next")
    sp.add_argument("--max-unavailable", type=int, default=1, metavar="K", help="instances down at once (default 1)")
    sp.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT, metavar="S",
                    help=f"how long an instance may take to pass its probe (default {READY_TIMEOUT:g})")
    add_remote_flags(sp)
    sp = add("logs", cmd_logs, "show program logs; several programs' lines merged in time order")
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
