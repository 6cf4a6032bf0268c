"""The host's state in one document: what `state` answers and what state/snapshot.json keeps."""
from __future__ import annotations

import hashlib
import os
import time

from . import engine, events
from .orphans import find_orphans
from .state import current_generation, read_gang_state, read_json, read_manifest, secret, state_path, write_json
from .supervisor_rpc import programs_info, socket_path


def current_state(root: str) -> dict:
    """Everything the operator side needs to decide and report, read in one go."""
    key = secret(root)
    programs = programs_info(root) if os.path.exists(socket_path(root)) else None
    # supervisord down: what it ran may live on unsupervised (kill -9, the OOM killer)
    orphans = find_orphans(root) if programs is None and os.path.isdir(os.path.join(root, "run")) else []
    found = engine.containers(root)  # [] at no cost where nothing ever ran in a container
    manifest = read_manifest(root)
    if found:
        by_program = {c["program"]: c for c in found}
        by_name = {c["name"]: c for c in found}
        # a rank runs in its instance's container on the host (the manifest names it), a service in its own
        runs_in = {m["name"]: m.get("container") for m in (manifest or {}).get("programs", [])}
        for p in programs or []:
            c = by_program.get(p["name"]) or by_name.get(runs_in.get(p["name"]) or "")
            if c is not None:
                p["container"] = {"id": c["id"][:12], "state": c["state"]}
        left = [c for c in engine.unsupervised(found, programs) if c["pid"]]
        orphans += [engine.as_orphan(c) for c in left]
        orphans += ranks_inside(root, left, runs_in)
    return {"root": root, "secret_id": hashlib.sha256(key).hexdigest()[:12] if key else None,
            "generation": current_generation(root), "supervisord": programs is not None,
            "manifest": manifest, "programs": programs or [], "gang": read_gang_state(root),
            "started": read_json(state_path(root, "started.json"), {}),
            "waiting": read_json(state_path(root, "waiting.json"), {}), "orphans": orphans, "time": time.time()}


def ranks_inside(root: str, left: list[dict], runs_in: dict[str, str | None]) -> list[dict]:
    """The ranks still running in instance containers nothing supervises (their exec clients gone
    with supervisord): each an orphan of its program, found by its marker (container_exec.py)."""
    from .container_exec import in_container, marker
    out = []
    for c in left:
        for program, name in runs_in.items():
            if name == c["name"] and program != c["program"]:
                for p in in_container(c, marker(root, program)):
                    out.append({"pid": p["pid"], "pgid": p["pgid"], "name": program, "group": c.get("owner", ""),
                                "container": c["id"][:12], "engine": c["engine"]})
    return out


def write_snapshot(root: str, state: dict | None = None) -> None:
    """state/snapshot.json: the state as of the last change, so `status` and a no-change `up`
    read one file instead of starting Python on the host. Kept by the agent (on every process
    state change) and by each action that changes something; trusted only while the agent lives.
    ``state``: a current_state() just read (the agent's poll reads it once for both uses)."""
    if os.path.isdir(os.path.join(root, "state")):
        state = current_state(root) if state is None else state
        write_json(state_path(root, "snapshot.json"), state)
        events.observe(root, state)  # what changed since the last one, into the event journal
