"""Device layouts a stack cannot use: refused at validation, each message naming its rule.

What a rank's runtime calls NPU i: the NPUs it can see are numbered from 0 in ascending physical
order; inside a container that is not privileged it sees only the container's /dev/davinciN
(containers.box_devices), on the host or privileged every one of the server's; then
ASCEND_RT_VISIBLE_DEVICES picks and renumbers among those (the launcher's default: the ranks'
NPUs, as the runtime there numbers them, containers.visible_ids). ATB (`atb_llm` dist.py) and
MindIE select `npu:{device_id}` with the ranktable's physical id (ASCEND_REFERENCE §7.4), so for
them NPU i must be physical NPU i for every rank's device.

Rules:
- ``visible-devices-format``: ASCEND_RT_VISIBLE_DEVICES is a comma-separated list of distinct NPU ids;
- ``visible-devices-exist``: every id it lists is an NPU the runtime sees there (a non-privileged
  container holds k NPUs, numbered 0..k-1);
- ``physical-device-ids``: atb / mindie-service ranks see every NPU of theirs under its physical id;
- ``container-devices``: `container.args` of an instance names no /dev/davinci device (the launcher
  gives the instance's container its NPUs; one given again or another would change the numbering).
"""
from __future__ import annotations

from typing import Iterator

from .containers import WHOLE_SERVER, seen_devices, visible_ids
from .model import Host, Instance, Topology
from .placement import rank_placement
from .yamlsrc import Path

VISIBLE = "ASCEND_RT_VISIBLE_DEVICES"


def _has(t: Topology, path: Path) -> bool:
    return t.locs is not None and t.locs.has(path)


def _env_where(t: Topology, i: int) -> Path | None:
    """Where the topology sets ASCEND_RT_VISIBLE_DEVICES for instance i; None: the launcher's default."""
    return next((p for p in (("instances", i, "env", VISIBLE), ("defaults", "env", VISIBLE)) if _has(t, p)), None)


def _parse(value: str) -> list[int] | None:
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        return None
    return [int(p) for p in parts]


def check(t: Topology) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    hosts = {h.name: (k, h) for k, h in enumerate(t.hosts)}
    for i, inst in enumerate(t.instances):
        out.extend(_container_args(t, i, inst))
        where = _env_where(t, i)
        value = dict(inst.env).get(VISIBLE) if where else None
        if value is not None and "{{" in value:
            continue  # filled per host at render: not checked here
        listed = _parse(value) if value is not None else None
        if value is not None and listed is None:
            out.append((where or ("instances", i), f"instance {inst.name}: {VISIBLE}={value!r} is not a list of "
                        "distinct NPU ids (0,1,...) [rule: visible-devices-format]"))
            continue
        placed: dict[str, list[int]] = {}  # host -> its devices, once: not a walk of the world per host
        for h, d in rank_placement(t, inst):
            placed.setdefault(h, []).append(d)
        for hname in inst.hosts:
            if hname not in hosts:
                continue
            k, host = hosts[hname]
            used = sorted(placed.get(hname, ()))
            problem = _host(t, i, k, inst, host, used, listed, where)
            if problem:
                out.append(problem)
                break  # one per instance: the same cause on every host
    return out


def _host(t: Topology, i: int, k: int, inst: Instance, host: Host, used: list[int], listed: list[int] | None,
          where: Path | None) -> tuple[Path, str] | None:
    if not used:  # no rank placed here (a host without devices): the placement's rules say why
        return None
    if listed is None and used and inst.framework not in WHOLE_SERVER:
        # the launcher's own list numbers each rank's NPU among those its runtime sees: nothing to
        # say (the checks below find nothing), and 2048 hosts skip making and parsing it
        return None
    seen = seen_devices(inst, host, used)  # the runtime's NPU j (before ASCEND_RT_VISIBLE_DEVICES) -> physical
    boxed = inst.container is not None and not inst.container.privileged
    if listed is None:  # the launcher's default
        listed = [int(j) for j in visible_ids(inst, host, used).split(",")]
    missing = [j for j in listed if j >= len(seen)]
    if missing:
        inside = (f"its container holds {len(seen)} NPU(s) ({', '.join(f'davinci{d}' for d in seen)}), "
                  f"numbered 0..{len(seen) - 1} inside" if boxed else f"host {host.name} has no NPU {missing[0]}")
        return (where or ("instances", i), f"instance {inst.name}: {VISIBLE} lists {missing[0]} but {inside} "
                "[rule: visible-devices-exist]")
    if inst.framework not in WHOLE_SERVER:
        return None
    order = [seen[j] for j in listed]  # the runtime's NPU n -> physical, after ASCEND_RT_VISIBLE_DEVICES
    wrong = [d for d in used if d >= len(order) or order[d] != d]
    if not wrong:
        return None
    d = wrong[0]
    got = f"physical NPU {order[d]}" if d < len(order) else "no NPU"
    if where is not None:
        where_, fix = where, f"set {VISIBLE} to 0..N-1 in order, or leave it unset"
    elif boxed and seen != list(range(len(seen))):
        where_ = ("hosts", k, "devices")
        fix = (f"its container holds {host.name}'s NPUs {', '.join(map(str, seen))}, which the runtime inside "
               "numbers from 0: declare the server's NPUs 0..N-1, or run the container privileged")
    else:
        where_ = ("instances", i, "devices") if _has(t, ("instances", i, "devices")) else ("instances", i)
        fix = f"let the instance use NPUs 0..N-1 of {host.name}"
    return (where_, f"instance {inst.name} ({inst.framework}) selects npu:{{device_id}} with the ranktable's "
            f"physical id, but on {host.name} its runtime's NPU {d} is {got}: {fix} [rule: physical-device-ids]")


def _container_args(t: Topology, i: int, inst: Instance) -> Iterator[tuple[Path, str]]:
    if inst.container is None:
        return
    base = next((p for p in (("instances", i, "container", "args"), ("defaults", "container", "args"))
                 if _has(t, p)), ("instances", i))
    args = inst.container.args
    for n, arg in enumerate(args):
        dev = arg.split("=", 1)[1] if arg.startswith("--device=") else args[n + 1] \
            if arg == "--device" and n + 1 < len(args) else ""
        if dev.split(":", 1)[0].startswith("/dev/davinci"):
            yield ((*base, n), f"instance {inst.name}: container.args gives {dev}: the launcher gives the "
                   "instance's container its NPUs (all of the server's for atb and mindie-service); one more "
                   "would change how the runtime numbers them [rule: container-devices]")
