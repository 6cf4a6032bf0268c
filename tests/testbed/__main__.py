"""By-hand use of the testbed.

    python -m tests.testbed up 16 [--root DIR] [--containers]  # prints the state dir, how to ssh in
    python -m tests.testbed status [--root DIR]    # without --root: every testbed on this machine
    python -m tests.testbed run h3 -- ip -4 addr   # on a host, without SSH (same view as sessions)
    python -m tests.testbed down [--root DIR | --all] [--keep]

Without --root, `up`, `run` and `down` use BASE_DIR/cli, so a developer's testbed never
collides with the ones test runs make (those get BASE_DIR/<random id>).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .core import BASE_DIR, Testbed, TestbedError, list_testbeds

DEFAULT_ROOT = BASE_DIR / "cli"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except TestbedError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="create N hosts")
    up.add_argument("n", type=int)
    up.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"state dir (default {DEFAULT_ROOT})")
    up.add_argument("--containers", action="store_true",
                    help="hosts can run `podman --runtime runc run --net host` (needs podman, runc)")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="tear a testbed down")
    which = down.add_mutually_exclusive_group()
    which.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    which.add_argument("--all", action="store_true",
                       help=f"every testbed under {BASE_DIR} (also those of running test sessions)")
    down.add_argument("--keep", action="store_true", help="keep the state dir (keys, logs)")
    down.set_defaults(func=_down)
    status = sub.add_parser("status", help="show hosts and whether their sshd is alive")
    status.add_argument("--root", type=Path, default=None)
    status.set_defaults(func=_status)
    run = sub.add_parser("run", help="run a command on a host without SSH")
    run.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    run.add_argument("--user", default=None, help="run as this user instead of root")
    run.add_argument("host")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    run.set_defaults(func=_run)
    return p


def _up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    tb = Testbed.up(args.n, args.root, containers=args.containers)
    took = time.monotonic() - t0
    first, last = tb.hosts[0], tb.hosts[-1]
    print(f"{len(tb.hosts)} hosts up in {took:.2f} s: {first.name} {first.address} .. "
          f"{last.name} {last.address}, bridge {tb.bridge} ({tb.gateway})")
    print(f"state dir:  {tb.root}")
    print(f"ssh:        ssh -F {tb.ssh_config} {first.name}          (user {tb.user}; as root: -l root)")
    print(f"no ssh:     python -m tests.testbed run{_root_opt(tb.root)} {first.name} -- hostname")
    if tb.containers:
        print(f"containers: {tb.engine} run --rm --net host ...   (labels them {tb.container_label})")
    print(f"tear down:  python -m tests.testbed down{_root_opt(tb.root)}")
    return 0


def _down(args: argparse.Namespace) -> int:
    roots = list_testbeds() if args.all else [args.root]
    for root in roots:
        Testbed.load(root).down(keep=args.keep)
        print(f"down: {root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    roots = [args.root] if args.root is not None else list_testbeds()
    if not roots:
        print(f"no testbeds under {BASE_DIR}")
    for root in roots:
        tb = Testbed.load(root)
        rows = tb.status()
        up = sum(r["sshd_alive"] for r in rows)
        print(f"{tb.root}: {up}/{len(rows)} sshd alive, bridge {tb.bridge} ({tb.gateway})")
        for r in rows:
            state = "alive" if r["sshd_alive"] else "DEAD"
            print(f"  {r['name']:<5} {r['address']:<15} sshd {r['sshd_pid']} {state:<5} "
                  f"netns {'yes' if r['netns'] else 'MISSING'}  link {r['link']}")
    return 0


def _run(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise TestbedError("run: no command given")
    proc = Testbed.load(args.root).run(args.host, argv, user=args.user, capture_output=False)
    return proc.returncode


def _root_opt(root: Path) -> str:
    return "" if root == DEFAULT_ROOT else f" --root {root}"


if __name__ == "__main__":
    sys.exit(main())
