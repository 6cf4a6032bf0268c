"""Programs in containers: the topology's rules for `container:` and the spec each host's runner reads.

An instance runs as ONE container per host, as the vendors run MindIE and ATB (seed 003's `docker
run`, MindIE-LLM's multi-node guides): its own supervised program `<instance>-container` (kind
"container", the first of the instance's programs on the host and a member of its gang) holds the
NPUs and idles; each rank is a supervised program too, started inside it with the engine's `exec`
(host/container_exec.py). The container gets all of the server's NPUs for a stack that selects
`npu:{device_id}` with the ranktable's physical id (atb, mindie-service: inside a container the
runtime numbers the NPUs it sees from 0, ASCEND_REFERENCE §7.4), else the NPUs of the instance's
ranks there. A service keeps one container per program, as etcd and the datasystem workers are run.
Every container runs in the foreground under its runner (host/container.py keeps it honest). What
the host decides at start time (the generation it runs, which devices and driver paths exist there)
is left to the runner; everything else is rendered here, so the same topology gives the same argv
for docker and podman.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Iterator, Sequence

from . import jsonfmt
from .model import Container, Host, Instance, Topology
from .plan import Program
from .yamlsrc import Path

# seed 003 (MindIE on Atlas 800I A2): the driver's device nodes and files every NPU container gets
MANAGER_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
DRIVER_MOUNTS = ("/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro",
                 "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi:ro",
                 "/usr/local/Ascend/driver/tools/hccn_tool:/usr/local/bin/hccn_tool:ro",
                 "/etc/hccn.conf:/etc/hccn.conf:ro",
                 "/etc/ascend_install.info:/etc/ascend_install.info:ro")
BOX = "container"  # kind, slot and name suffix of an instance's per-host container program
WHOLE_SERVER = ("atb", "mindie-service")  # select npu:{device_id} with the ranktable's physical id
# what the per-host container runs: nothing but a process that holds it up until it is stopped
HOLD = ("/bin/sh", "-c", 'trap "exit 0" TERM INT HUP; while :; do sleep 3600 & wait $!; done')
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
        if base[0] == "instances":  # its per-host container program takes <instance>-container
            taken = f"{t.instances[base[1]].name}-{BOX}"
            names = [("services", k, n) for k, n in enumerate(s.name for s in t.services)]
            names += [("instances", k, n) for k, n in enumerate(i.name for i in t.instances)]
            out.extend(((kind, k, "name"), f"{taken!r} names the per-host container program of instance "
                        f"{t.instances[base[1]].name} (in containers): choose another name", "error")
                       for kind, k, n in names if n == taken)
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


def box_devices(inst: Instance, host: Host, used: Iterable[int]) -> tuple[int, ...]:
    """The NPUs of an instance's container on a host: the whole server's where the stack needs
    physical = logical ids, else those of its ranks there (``used``)."""
    ids = set(used)
    if inst.framework in WHOLE_SERVER:
        ids |= {d.id for d in host.devices}
    return tuple(sorted(ids))


def seen_devices(inst: Instance, host: Host, used: Sequence[int]) -> list[int]:
    """Physical ids of the NPUs a rank's runtime sees there, in its numbering (before
    ASCEND_RT_VISIBLE_DEVICES): its container's, renumbered from 0, in a container that is not
    privileged; else every NPU of the server under its physical id."""
    if inst.container is not None and not inst.container.privileged:
        return list(box_devices(inst, host, used))
    return list(range(max([d.id for d in host.devices] + list(used), default=-1) + 1))


def visible_ids(inst: Instance, host: Host, used: Sequence[int]) -> str:
    """The launcher's ASCEND_RT_VISIBLE_DEVICES for an instance's ranks on a host: their NPUs as the
    runtime there numbers them (physical ids on the host, 0.. in a container holding a subset); for
    a stack that selects its NPU by physical id, every NPU seen there, in order (no renumbering)."""
    seen = seen_devices(inst, host, used)
    if inst.framework in WHOLE_SERVER:
        return ",".join(str(j) for j in range(len(seen)))
    return ",".join(str(seen.index(d)) for d in used)


def box_program(inst: Instance, host: Host, ranks: Sequence[Program]) -> Program:
    """The supervised program that runs an instance's container on a host (kind BOX)."""
    env = (("LAUNCHER_DEPLOYMENT", dict(ranks[0].env).get("LAUNCHER_DEPLOYMENT", "")),
           ("LAUNCHER_INSTANCE", inst.name), ("LAUNCHER_HOST", host.name))
    return Program(name=f"{inst.name}-{BOX}", host=host.name, owner=inst.name, kind=BOX, argv=HOLD, cwd=None,
                   env=env, limits=ranks[0].limits, numa_via_numactl=False, probe=ranks[0].probe,
                   devices=box_devices(inst, host, (d for p in ranks for d in p.devices)),
                   container=inst.container)


def with_boxes(t: Topology, programs: Sequence[Program], host: Host) -> tuple[Program, ...]:
    """A host's programs with each containerized instance's container program before its ranks."""
    out: list[Program] = []
    seen: set[str] = set()
    for p in programs:
        # a rank carries its instance's container (expand): no walk over every instance per host
        if p.kind == "rank" and p.container is not None and p.owner not in seen:
            seen.add(p.owner)
            inst = t.instance(p.owner)
            assert inst is not None, p.owner
            out.append(box_program(inst, host, [q for q in programs if q.owner == p.owner]))
        out.append(p)
    return tuple(out)


def box_of(programs: Sequence[Program]) -> Program | None:
    return next((p for p in programs if p.kind == BOX), None)


def container_program(p: Program, programs: Sequence[Program]) -> str | None:
    """The program whose container ``p`` runs in: its instance's per-host container program, its
    own (a service, that container program itself), or None (on the host)."""
    if p.container is None:
        return None
    box = box_of([q for q in programs if q.owner == p.owner]) if p.kind == "rank" else None
    return (box or p).name


def runs_in(deployment: str, p: Program, programs: Sequence[Program], root: str) -> str:
    """The name of the container a program runs in (the engine's name for container_program's)."""
    return container_name(deployment, p.host, container_program(p, programs) or p.name, root)


def labels(deployment: str, program: Program, root: str) -> dict[str, str]:
    owner_key = "service" if program.kind == "service" else "instance"
    return {f"{LABEL}.root": root, f"{LABEL}.deployment": deployment, f"{LABEL}.{owner_key}": program.owner,
            f"{LABEL}.host": program.host, f"{LABEL}.program": program.name}


def spec(deployment: str, programs: Sequence[Program], root: str, slot_of: Any) -> bytes:
    """containers/<owner>.json: what host/container.py needs to run, stop and find each program's
    container. ``slot_of(program)`` is the argument supervisord passes the owner's script. A program
    with a container of its own (a service, an instance's BOX) has its `run` options; a rank names
    the slot of the container it is exec'd in ("in")."""
    c = programs[0].container
    assert c is not None and c.image is not None  # validate refuses an owner without an image
    box = box_of(programs)

    def entry(p: Program) -> dict[str, Any]:
        if box is not None and p is not box:
            return {"program": p.name, "in": slot_of(box), "name": container_name(deployment, p.host, box.name, root)}
        return {"program": p.name, "name": container_name(deployment, p.host, p.name, root),
                "labels": labels(deployment, p, root),
                "devices": [f"/dev/davinci{d}" for d in p.devices] + (list(MANAGER_DEVICES) if p.devices else []),
                "flags": run_flags(c, p), **({"command": list(p.argv)} if p is box else {})}

    doc = {"engine": c.engine, "image": c.image, "owner": programs[0].owner, "root": root,
           "stop_timeout": c.stop_timeout,
           "optional_mounts": list(DRIVER_MOUNTS) if c.driver_mounts else [],
           "programs": {(slot_of(p) or ""): entry(p) for p in programs}}
    return jsonfmt.dumps_bytes(doc)
