"""Programs in containers: the topology's rules for `container:` and the spec each host's runner reads.

One container per supervised program, in the foreground (the engine's client is what supervisord
watches; host/container.py keeps it honest). What the host decides at start time (the generation
it runs, which devices and driver paths exist there) is left to the runner; everything else is
rendered here, so the same topology gives the same argv for docker and podman.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterator, Sequence

from . import jsonfmt
from .model import Container, Topology
from .plan import Program
from .yamlsrc import Path

# seed 003 (MindIE on Atlas 800I A2): the driver's device nodes and files every NPU container gets
MANAGER_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
DRIVER_MOUNTS = ("/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro",
                 "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi:ro",
                 "/usr/local/Ascend/driver/tools/hccn_tool:/usr/local/bin/hccn_tool:ro",
                 "/etc/hccn.conf:/etc/hccn.conf:ro",
                 "/etc/ascend_install.info:/etc/ascend_install.info:ro")
LABEL = "ascend-launcher"  # label prefix: ascend-launcher.root, .deployment, .host, ...
MAX_NAME = 128
# `run` options the launcher sets itself: given again in args they would detach the program from
# supervision (-d), rename it (then stop and cleanup miss it) or ask for a terminal nobody holds
MANAGED_ARGS = {"-d": "the program must stay in the foreground under supervisord",
                "--detach": "the program must stay in the foreground under supervisord",
                "--name": "the launcher names each container (deployment, host, program)",
                "--cidfile": "the launcher records the container id itself",
                "--rm": "the launcher removes each container when it stops",
                "-i": "supervised programs have no terminal", "--interactive": "supervised programs have no terminal",
                "-t": "supervised programs have no terminal", "--tty": "supervised programs have no terminal",
                "-it": "supervised programs have no terminal"}


def _owners(t: Topology) -> Iterator[tuple[Path, Container]]:
    for i, inst in enumerate(t.instances):
        if inst.container is not None:
            yield ("instances", i), inst.container
    for i, svc in enumerate(t.services):
        if svc.container is not None:
            yield ("services", i), svc.container


def _where(t: Topology, base: Path, key: str | None = None) -> Path:
    """The owner's own `container.KEY` if written there, else defaults' (where the value came from)."""
    for path in (base + ("container",), ("defaults", "container")):
        if t.locs is not None and t.locs.has(path if key is None else path + (key,)):
            return path if key is None else path + (key,)
    return base


def check(t: Topology) -> list[tuple[Path, str, str]]:
    """(path, message, severity) for every container rule a topology breaks."""
    out: list[tuple[Path, str, str]] = []
    for base, c in _owners(t):
        if c.image is None:
            out.append((_where(t, base), "container has no image: set container.image here or in "
                        "defaults.container", "error"))
        where_args = _where(t, base, "args")
        for k, arg in enumerate(c.args):
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_ARGS:
                out.append((where_args + (k,), f"container.args: {flag} is not allowed here: "
                            f"{MANAGED_ARGS[flag]}", "error"))
        if base[0] == "instances" and c.network != "host":
            out.append((_where(t, base, "network"), f"container.network {c.network!r}: the ranks of an instance "
                        "reach each other (HCCL, the rendezvous) on host addresses; use host", "warning"))
    return out


def container_name(deployment: str, host: str, program: str, root: str) -> str:
    """Unique per engine on a host: a hash of the host's deployment root keeps two deployments of
    the same name (different deploy_dir) apart; within the engine's name rules and MAX_NAME."""
    digest = hashlib.sha256(root.encode()).hexdigest()
    name = f"al-{deployment}-{host}-{program}-{digest[:6]}"
    if len(name) > MAX_NAME:
        name = f"al-{program[:60]}-{hashlib.sha256((root + chr(0) + program).encode()).hexdigest()[:16]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _ulimit(limit: str, value: str) -> list[str]:
    v = "-1" if value == "unlimited" else value
    return ["--ulimit", f"{limit}={v}:{v}"]


def run_flags(c: Container, program: Program) -> list[str]:
    """The `run` options from the topology: namespaces, shm, privileges, limits, user mounts, args.

    memlock and nofile go in as --ulimit (raised from outside: inside, a process may only lower
    them); NUMA CPUs and memory as cpuset flags (numactl inside, if the image has it, does the rest)."""
    flags = [f"--net={c.network}", f"--ipc={c.ipc}"]
    if c.init:
        flags.append("--init")
    if c.shm_size:
        flags.append(f"--shm-size={c.shm_size}")
    if c.privileged:
        flags.append("--privileged")
    if c.user:
        flags += ["-u", c.user]
    limits = program.limits
    if limits.memlock:
        flags += _ulimit("memlock", limits.memlock)
    if limits.nofile:
        flags += _ulimit("nofile", str(limits.nofile))
    numa = limits.numa
    if numa and numa.physcpubind:
        flags.append(f"--cpuset-cpus={numa.physcpubind}")
    if numa and numa.membind is not None:
        flags.append(f"--cpuset-mems={numa.membind}")
    for m in c.mounts:
        flags += ["-v", m]
    return flags + list(c.args)


def labels(deployment: str, program: Program, root: str) -> dict[str, str]:
    owner_key = "instance" if program.kind == "rank" else "service"
    return {f"{LABEL}.root": root, f"{LABEL}.deployment": deployment, f"{LABEL}.{owner_key}": program.owner,
            f"{LABEL}.host": program.host, f"{LABEL}.program": program.name}


def spec(deployment: str, programs: Sequence[Program], root: str, slot_of: Any) -> bytes:
    """containers/<owner>.json: what host/container.py needs to run, stop and find each program's
    container. ``slot_of(program)`` is the argument supervisord passes the owner's script."""
    c = programs[0].container
    assert c is not None and c.image is not None  # validate refuses an owner without an image
    doc = {"engine": c.engine, "image": c.image, "owner": programs[0].owner, "root": root,
           "stop_timeout": c.stop_timeout,
           "optional_mounts": list(DRIVER_MOUNTS) if c.driver_mounts else [],
           "programs": {
               (slot_of(p) or ""): {
                   "program": p.name,
                   "name": container_name(deployment, p.host, p.name, root),
                   "labels": labels(deployment, p, root),
                   "devices": [f"/dev/davinci{d}" for d in p.devices] + (list(MANAGER_DEVICES) if p.devices else []),
                   "flags": run_flags(c, p)}
               for p in programs}}
    return jsonfmt.dumps_bytes(doc)
