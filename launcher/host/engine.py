"""The container engine as the host side asks it: run its client, list ROOT's containers, remove them.

Containers are labelled with ROOT, so the ones a dead supervisord or a killed runner left behind
are found by label (``containers``) and treated as that supervisord's orphans (orphans.py).
container.py runs a program's container; container_exec.py execs ranks into an instance's one.
"""
from __future__ import annotations

import os

from .state import read_json, state_path, update_state

LABEL = "ascend-launcher"
ENGINE_ERROR = 125   # docker/podman: the engine could not run the container (no image, bad option)
EX_CONFIG = 78       # what the agent takes as "a restart will not fix this" (a FAILED gang at once)
ENGINE_TIMEOUT = 60.0
REGISTRY_TIMEOUT = 20.0  # asking a registry whether it has an image (`check`, before a switch)
LIVE = ("running", "created", "paused", "restarting", "configured", "initialized", "stopping")


def spec_path(gen: str, owner: str) -> str:
    return os.path.join(gen, "containers", f"{owner}.json")


def cidfile(root: str, program: str) -> str:
    return os.path.join(root, "run", "containers", f"{program}.cid")


def run_engine(argv: list[str], timeout: float = ENGINE_TIMEOUT) -> tuple[int, str]:
    """(exit code, stdout) of an engine command; (-1, "") when it cannot run or hangs."""
    import subprocess  # here: `state` imports this module on every status and calls no engine there
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return -1, ""
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def remove(engine: str, *names: str) -> None:
    """`rm -f` (a stop without grace) of containers that may not exist: absent is fine."""
    if names:
        run_engine([engine, "rm", "-f", *names])


def record_engine(root: str, engine: str) -> None:
    """state/engines.json: the engines this root ever ran containers with, to look for leftovers."""
    if engine not in read_json(state_path(root, "engines.json"), {}):
        update_state(root, "engines.json", {engine: True})


def engines(root: str) -> list[str]:
    return sorted(read_json(state_path(root, "engines.json"), {}))


_FORMAT = "\t".join(["{{.Id}}", "{{.Name}}", "{{.State.Status}}", "{{.State.Pid}}"] +
                    [f'{{{{index .Config.Labels "{LABEL}.{k}"}}}}' for k in ("program", "generation", "instance", "service")])


def containers(root: str) -> list[dict]:
    """Every container labelled with ROOT, of every engine this root used: id, name, state, pid
    (the host pid of its first process), program, generation, engine. [] when there is none."""
    out = []
    for engine in engines(root):
        code, ps = run_engine([engine, "ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL}.root={root}"])
        ids = ps.split()
        if code != 0 or not ids:
            continue
        for line in run_engine([engine, "inspect", "--format", _FORMAT, *ids])[1].splitlines():
            parts = line.split("\t")
            if len(parts) == 8:
                out.append({"id": parts[0], "name": parts[1].lstrip("/"), "state": parts[2],
                            "pid": int(parts[3]) if parts[3].isdigit() and parts[3] != "0" else None,
                            "program": parts[4], "generation": parts[5], "owner": parts[6] or parts[7],
                            "engine": engine})
    return out


def unsupervised(found: list[dict], programs: list[dict] | None) -> list[dict]:
    """The containers no running program of supervisord owns (all of them when it is down):
    a runner killed with its client, or a supervisord gone, left them."""
    running = {p["name"] for p in programs or [] if p["state"] in ("RUNNING", "STARTING", "STOPPING")}
    return [c for c in found if c["state"] in LIVE and c["program"] not in running]


def as_orphan(c: dict) -> dict:
    """A container nothing supervises, as `state` reports orphans (orphans.find_orphans' shape)."""
    return {"pid": c["pid"], "pgid": c["pid"], "name": c["program"], "group": c.get("owner", ""),
            "container": c["id"][:12], "engine": c["engine"]}


def remove_all(root: str) -> list[dict]:
    """Remove every container of ROOT (supervisord is down: none of them is supervised)."""
    found = containers(root)
    by_engine: dict[str, list[str]] = {}
    for c in found:
        by_engine.setdefault(c["engine"], []).append(c["id"])
    for engine, ids in by_engine.items():
        remove(engine, *ids)
    return [c for c in found if c["state"] in LIVE]


def remove_leftovers(root: str, groups: list[str] | None, programs: list[str] | None) -> list[dict]:
    """The containers of ``groups``' / ``programs``' (None and None: every) programs that
    supervisord runs no process for, left by a runner that could not clean up (kill -9: its
    cidfile stays, and its engine client may run on, attached): removed. A runner that ended
    cleanly removed its cidfile, so this costs one listdir where nothing was left."""
    try:
        cids = [f[:-4] for f in os.listdir(os.path.join(root, "run", "containers")) if f.endswith(".cid")]
    except OSError:
        return []
    if not cids:
        return []
    from .supervisor_rpc import rpc
    info = {p["name"]: p for p in rpc(root, 10.0).supervisor.getAllProcessInfo()}
    everything = groups is None and programs is None
    left = [n for n in cids if not (info.get(n) or {}).get("pid")
            and (everything or n in (programs or ()) or (info.get(n) or {}).get("group") in (groups or ()))]
    if not left:
        return []
    found = [c for c in containers(root) if c["program"] in left]
    for c in found:
        remove(c["engine"], c["id"])
    for n in left:
        try:
            os.unlink(cidfile(root, n))
        except OSError:
            pass
    return [c for c in found if c["state"] in LIVE]
