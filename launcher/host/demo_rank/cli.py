"""The demo rank's command line and its run: env, ranktable, barrier, LLM-DataDist, health, in that order."""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Sequence

from ... import __version__
from .barrier import barrier
from .datadist import link_all, load_datadist, serve_links
from .errors import EXIT_CRASH, EXIT_FAIL_BARRIER, EXIT_OK, DemoRankError, EnvError, Stopped
from .health import DEFAULT_HEALTH_PORT, health_doc, start_health
from . import mindie, ray_driver, vllm
from .identity import Identity, check_table, load_table, parse_env, uint
from .net import Log
from .signals import arm_signals


def _logger(prefix: str) -> Log:
    """A log function writing one stamped, prefixed line to stderr (python logging's stamp, as
    ATB and torch print it: `launcher logs` merges several ranks' lines by it)."""
    def log(message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"
        print(f"{stamp} {prefix} {message}", file=sys.stderr, flush=True)
    return log


def _non_negative(text: str) -> float:
    """argparse type: seconds >= 0."""
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = uint(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    """argparse type: a TCP port."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; usage errors exit 2 like bad env."""
    p = argparse.ArgumentParser(prog="python -m launcher.host.demo_rank",
                                description="Stand-in for a model rank: checks env and ranktable, meets "
                                            "its world over TCP, then serves GET /health.")
    p.add_argument("--table-timeout", type=_non_negative, default=30.0, metavar="SECONDS",
                   help="how long to wait for the ranktable's status to become 'completed' (default 30)")
    p.add_argument("--barrier-timeout", type=_non_negative, default=60.0, metavar="SECONDS",
                   help="how long to wait for every rank of the world (default 60)")
    p.add_argument("--health-port", type=_port, default=DEFAULT_HEALTH_PORT, metavar="PORT",
                   help=f"serve /health on PORT + LOCAL_RANK (default {DEFAULT_HEALTH_PORT})")
    p.add_argument("--health-host", default=os.environ.get("LAUNCHER_HOST_ADDRESS") or "0.0.0.0", metavar="ADDR",
                   help="address to serve /health on (default: this host's address from LAUNCHER_HOST_ADDRESS, "
                        "so several local 'hosts' on one machine do not collide; else 0.0.0.0)")
    p.add_argument("--crash-after", type=_non_negative, default=None, metavar="SECONDS",
                   help=f"exit {EXIT_CRASH} after serving this long (for restart-budget tests)")
    p.add_argument("--fail-barrier", action="store_true",
                   help=f"exit {EXIT_FAIL_BARRIER} just before the barrier (a rank that always crashes)")
    p.add_argument("--link-retry", type=_count, default=3, metavar="N",
                   help="decoder side: attempts after the first to reach a prompt listener (default 3; "
                        "0: one attempt, so a link succeeds only when the prompt side started first)")
    p.add_argument("--link-timeout", type=_non_negative, default=2.0, metavar="SECONDS",
                   help="decoder side: deadline of one link attempt (default 2)")
    p.add_argument("--mindie", action="store_true",
                   help="one process per server, reading its launch as mindieservice_daemon does (RANK_TABLE_FILE, "
                        "MIES_CONFIG_JSON_PATH, MIES_CONTAINER_IP or HOST_IP); the world is the table's servers")
    p.add_argument("--vllm-dp", action="store_true",
                   help="one process per node, reading vLLM's data parallel flags (the other arguments) and "
                        "HCCL_IF_IP as a multi-node `vllm serve` does; the world is the DP nodes")
    ray_driver.add_args(p)
    p.add_argument("--version", action="version", version=f"demo_rank {__version__}")
    args, rest = p.parse_known_args(argv)
    if rest and not args.vllm_dp:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    args.vllm_args = rest
    return args


def _run(args: argparse.Namespace) -> int:
    """Env, table, barrier, health; return the exit code."""
    stack_doc = None
    if args.mindie or args.vllm_dp:  # the world as that stack reads it: its servers / DP nodes
        try:
            ident, doc = (mindie.identity(os.environ, args.table_timeout, _logger("[demo_rank mindie]"))
                          if args.mindie else vllm.identity(args.vllm_args, os.environ))
            stack_doc = {"mindie" if args.mindie else "vllm": doc}
        except DemoRankError as exc:
            _logger("[demo_rank]")(f"error: {exc}")
            return exc.code
    else:
        ident = parse_env(os.environ)
    log = _logger(f"[demo_rank rank={ident.rank} host={ident.host}]")
    try:
        return _run_as(ident, args, log, stack_doc)
    except Stopped as exc:
        log(f"{exc} received: stopped")
        return EXIT_OK


def _run_as(ident: Identity, args: argparse.Namespace, log: Log, stack_doc: dict | None = None) -> int:
    """Table, barrier, health for a known identity; return the exit code."""
    health_port = args.health_port + ident.local_rank
    if health_port > 65535:
        raise EnvError(f"LOCAL_RANK={ident.local_rank}: --health-port {args.health_port} + LOCAL_RANK "
                       f"is beyond 65535")
    listener: socket.socket | None = None
    endpoint = None
    log(f"rank {ident.rank}/{ident.world_size} local_rank {ident.local_rank} instance {ident.instance} "
        f"device {ident.device_id} ({ident.device_ip}) server {ident.server_id} "
        f"master {ident.master_addr}:{ident.master_port} pid {os.getpid()}")
    try:
        if stack_doc is None:  # --mindie: mindie.identity checked the table as MindIE does; --vllm-dp: none
            doc = load_table(ident.ranktable, ident.ranktable_var, args.table_timeout, log)
            mine = check_table(doc, ident)
            log(f"ranktable {ident.ranktable}: ok ({ident.world_size} devices, rank {ident.rank} at {mine.where})")
        if args.fail_barrier:
            log(f"--fail-barrier: exiting {EXIT_FAIL_BARRIER} before the barrier")
            return EXIT_FAIL_BARRIER
        started = time.monotonic()
        world = barrier(ident, args.barrier_timeout, log)
        passed_at = time.time()
        log(f"barrier passed: {len(world)}/{ident.world_size} ranks in {time.monotonic() - started:.2f} s")
        doc = health_doc(ident, passed_at, os.getpid())
        doc.update(stack_doc or {})
        dd = load_datadist(os.environ)
        if dd is not None:
            doc["datadist"] = {"cluster_id": dd.cluster_id, "role": dd.role}
            if dd.role == "prompt":
                listener = serve_links(dd, log)
                doc["datadist"]["listening"] = dd.listen
            else:
                doc["datadist"]["links"] = link_all(dd, ident.device_ip, args.link_retry, args.link_timeout, log)
        body = (json.dumps(doc) + "\n").encode()
        server = start_health(args.health_host, health_port, body, log)
        where = (stack_doc or {}).get("mindie", {}).get("endpoint")
        if where:  # the MindIE master's request endpoint (mindie.endpoint)
            ip, port = where.rsplit(":", 1)
            endpoint = start_health(ip, int(port), body, log)
            log(f"mindie: serving requests at {where}")
    except DemoRankError as exc:
        log(f"error: {exc}")
        return exc.code
    stopped = False
    try:
        log(f"serving http://{args.health_host}:{health_port}/health")
        print("ready", file=sys.stderr, flush=True)
        if args.crash_after is None:
            while True:
                time.sleep(3600)  # SIGTERM/SIGINT end this by raising Stopped
        time.sleep(args.crash_after)
        log(f"--crash-after {args.crash_after:g}: exiting {EXIT_CRASH}")
        return EXIT_CRASH
    except Stopped:
        stopped = True
        raise
    finally:
        # stopped: the process exits now and the kernel closes the port; shutdown() would wait
        # for the health thread's next poll (up to 0.2 s), which every gang stop waited out
        if not stopped:
            server.shutdown()
            server.server_close()
        if listener is not None:
            listener.close()
        if endpoint is not None and not stopped:
            endpoint.shutdown()
            endpoint.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    log = _logger("[demo_rank]")  # until the identity is known
    arm_signals()
    try:
        return ray_driver.run(args, _logger("[demo_rank ray]")) if args.ray else _run(args)
    except EnvError as exc:
        log(f"error: {exc}")
        return exc.code
    except Stopped as exc:
        log(f"{exc} received: stopped")
        return EXIT_OK

