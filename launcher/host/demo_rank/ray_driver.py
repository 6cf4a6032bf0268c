"""`--ray ADDRESS`: a Ray driver that needs no model, shaped as vLLM's Ray executor.

vLLM's RayDistributedExecutor connects to a running cluster (`ray.init(address=...)`), reserves a
placement group of one {"NPU": 1} bundle per worker (vllm-ascend: the device resource its
platform names), starts one worker actor in each bundle and serves the API once they all answered.
When a worker or its node dies, the executor dies with it: the server stops answering and the
process exits non-zero, for its supervisor to start it again on the cluster as it is then.

This driver does the same with --ray-nodes bundles of {RESOURCE: 1} under STRICT_SPREAD (one per
node: each node must offer RESOURCE, `ray start --resources '{"NPU": 1}'`), then serves GET /health
naming its world: the node id, IP and pid of each actor. Every --ray-period seconds it asks each
actor again; an actor that died or does not answer within --ray-timeout ends it with EXIT_RAY.

Ray is imported here only (a test extra, not shipped): this mode runs under a Python that has it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .errors import EXIT_ENV, EXIT_RAY, DemoRankError, Stopped
from .health import start_health
from .net import Log

class RayError(DemoRankError):
    code = EXIT_RAY


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--ray: a Ray driver as vLLM's Ray executor")
    g.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="connect to the Ray cluster at ADDRESS (GCS host:port), place one actor per node, "
                        "serve /health on --health-port naming them; exit 8 when one dies")
    g.add_argument("--ray-nodes", type=int, default=2, metavar="N", help="bundles, one per node (default 2)")
    g.add_argument("--ray-resource", default="NPU", metavar="NAME",
                   help="the custom resource each bundle takes one of (default NPU)")
    g.add_argument("--ray-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the placement group, and for an actor's answer (default 120)")
    g.add_argument("--ray-period", type=float, default=1.0, metavar="SECONDS",
                   help="how often each actor is asked again (default 1)")


def _world(ray: Any, args: argparse.Namespace, log: Log) -> tuple[dict[str, Any], list[Any]]:
    """Connect, reserve the bundles, start an actor in each; the world and the actors."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    class Worker:  # one per bundle, as vLLM's RayWorkerWrapper
        def where(self) -> dict[str, Any]:
            ctx = ray.get_runtime_context()
            return {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}
    remote: Any = ray.remote(num_cpus=0)(Worker)

    log(f"pid {os.getpid()}: connecting to {args.ray}")
    try:
        ray.init(address=args.ray, log_to_driver=False, logging_level="WARNING")
    except Exception as exc:  # no cluster there (yet): as vLLM, give up; the supervisor starts it again
        raise RayError(f"cannot connect to the Ray cluster at {args.ray}: {type(exc).__name__}: {exc}") from None
    ctx = ray.get_runtime_context()
    log(f"connected to {args.ray} as job {ctx.get_job_id()} (node {ctx.get_node_id()})")
    bundles = [{args.ray_resource: 1.0} for _ in range(args.ray_nodes)]
    pg = placement_group(bundles, strategy="STRICT_SPREAD")
    try:
        ray.get(pg.ready(), timeout=args.ray_timeout)
    except Exception as exc:
        raise RayError(f"placement group of {args.ray_nodes} x {{{args.ray_resource}: 1}} (one per node) not "
                       f"ready in {args.ray_timeout:g} s: {type(exc).__name__}: {exc}") from None
    log(f"placement group {pg.id.hex()} ready: {args.ray_nodes} bundles")
    actors = [remote.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                             resources={args.ray_resource: 1.0}).remote() for i in range(args.ray_nodes)]
    try:
        where = ray.get([a.where.remote() for a in actors], timeout=args.ray_timeout)
    except Exception as exc:
        raise RayError(f"the actors did not answer: {type(exc).__name__}: {exc}") from None
    world = {"address": args.ray, "placement_group": pg.id.hex(), "world_size": len(actors),
             "nodes": sorted({w["node_id"] for w in where}), "actors": where}
    log(f"world: {len(world['nodes'])} nodes: {', '.join(w['ip'] for w in where)}")
    return world, actors


def _watch(ray: Any, actors: list[Any], args: argparse.Namespace) -> None:
    """Return (by raising RayError) when an actor no longer answers: its node or process died."""
    while True:
        time.sleep(args.ray_period)  # SIGTERM/SIGINT end this by raising Stopped
        try:
            ray.get([a.where.remote() for a in actors], timeout=args.ray_timeout)
        except Stopped:
            raise
        except Exception as exc:
            raise RayError(f"lost the world: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def run(args: argparse.Namespace, log: Log) -> int:
    """The driver's life; returns its exit code (Stopped propagates: a deliberate stop, exit 0)."""
    try:
        import ray
    except ImportError as exc:
        log(f"error: --ray needs Ray in this Python ({exc}); run it with one that has it (pip install ray)")
        return EXIT_ENV
    try:
        world, actors = _world(ray, args, log)
        body = (json.dumps({"ray": world, "pid": os.getpid()}) + "\n").encode()
        host = args.health_host
        server = start_health(host, args.health_port, body, log)
        log(f"serving http://{host}:{args.health_port}/health")
        print("ready", file=sys.stderr, flush=True)
        try:
            _watch(ray, actors, args)
        finally:
            server.shutdown()  # not answering ready any more, before the process is gone
            server.server_close()
    except DemoRankError as exc:
        log(f"error: {exc}")
        return exc.code
    return EXIT_RAY  # unreachable: _watch returns only by raising
