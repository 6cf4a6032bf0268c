"""The host actions that read or change a deployment: state, prepare, switch, start, stop, prune, down, ..."""
from __future__ import annotations

import hashlib
import json
import os
import time

from . import upload
from .container import check_generation
from .orphans import stop_orphans
from .leftovers import stop_leftovers
from .proctree import subreaper_path
from .snapshot import current_state, write_snapshot
from .state import (current_generation, drop_intents, is_blank, read_json, read_manifest, secret, set_desired,
                    state_lock, state_path, update_state, write_json, write_secret)
from .supervisor_rpc import STOP_RPC_TIMEOUT, rpc, supervisord_alive
from .supervisord import apply_config, reload_groups, shutdown, start_supervisord

RELAY_TIMEOUT = 150.0  # a switch back through an agent: supervisord rereads, maybe restarts the agent
WAKE_AGENT = "launcher-wake"  # a REMOTE_COMMUNICATION event type the agent polls on

# shutil is imported where needed: `state` (every status) skips it


def act_state(root: str, args: list[str]) -> dict:
    state = current_state(root)
    state["runtime_missing"] = "--runtime-missing" in args
    return state


def act_prepare(root: str, args: list[str]) -> dict:
    """Upload a generation without touching what runs. stdin: a tar with gen/ (its files) and,
    when the host needs it, secret (the deployment's agent key).

    With --switch=RUNTIME (only for a host with nothing deployed, so nothing to protect) it also
    switches to the generation and starts --start= groups, as `switch` does: one call, one
    Python start and one round trip for a cold host. `switch -` undoes it.

    With --if-blank it first checks that ROOT has nothing of the deployment (state.BLANK_MARKS),
    and where it has, touches nothing and answers {"not_blank": true}: `up` sends this without
    reading the hosts' state first when the lock host is blank (deploy/uploads.py)."""
    generation = args[0]
    if "--if-blank" in args and not is_blank(root):
        return {"generation": generation, "not_blank": True}
    for sub, mode in (("run", 0o700), ("logs", 0o755), ("state", 0o755), ("gens", 0o755)):
        os.makedirs(os.path.join(root, sub), mode=mode, exist_ok=True)
    os.chmod(os.path.join(root, "run"), 0o700)
    files = upload.files()
    uploaded = upload.install_dir(files, "gen", os.path.join(root, "gens", generation))
    check_generation(os.path.join(root, "gens", generation))  # no engine or image: refused before any switch
    key = next((body for name, _, body in files if name == "secret"), None)
    if key is not None:
        write_secret(root, key.strip(), "--force-secret" in args)
    runtime = next((a[len("--switch="):] for a in args if a.startswith("--switch=")), None)
    if runtime:
        switched = act_switch(root, [generation, runtime, *(a for a in args if a.startswith("--start="))])
        return {"generation": generation, "uploaded": uploaded, "switched": switched}
    write_snapshot(root)
    return {"generation": generation, "uploaded": uploaded}


def _swap_symlink(link: str, target: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # rename(2) over the old link: atomic
    upload.fsync_dir(os.path.dirname(link))  # and durable: a power loss must not undo a switch half


def act_switch(root: str, args: list[str]) -> dict:
    """Make GENERATION current and bring supervisord in line; changed groups end up stopped."""
    generation, runtime_id = args[0], args[1]
    previous = current_generation(root)
    only_from = next((a[len("--if-current="):] for a in args[2:] if a.startswith("--if-current=")), None)
    if only_from is not None and previous != only_from:  # a rollback of a switch that never happened
        # here (or was undone already): compare-and-swap, never a switch over a later `up`'s
        write_snapshot(root)
        return {"previous": previous, "generation": previous, "unchanged": True}
    if generation == "-":  # undo a first switch: there was no previous generation, so nothing of
        # this one stays: not `current`, not the supervisord it started, nor what that runs
        link = os.path.join(root, "current")
        if os.path.lexists(link):
            os.unlink(link)
        stopped = act_down(root, [])["stopped_supervisord"]
        for name in ("started.json", "waiting.json"):
            if os.path.lexists(state_path(root, name)):
                os.unlink(state_path(root, name))
        return {"previous": previous, "generation": None, "stopped_supervisord": stopped}
    want = next((a[len("--digest="):] for a in args[2:] if a.startswith("--digest=")), None)
    if want is not None and not upload.intact(os.path.join(root, "gens", generation), want):
        raise RuntimeError(f"generation {generation} here does not match its digest (damaged or truncated "
                           "since its upload): nothing was switched")
    runtime_link = os.path.join(root, "runtime", "current")
    old_runtime = os.readlink(runtime_link) if os.path.islink(runtime_link) else None
    _swap_symlink(runtime_link, runtime_id)
    _swap_symlink(os.path.join(root, "current"), os.path.join("gens", generation))
    changes: dict
    orphans = start_supervisord(root) if not supervisord_alive(root) else None
    if orphans is not None:
        changes = {"added": [], "changed": [], "removed": [], "started_supervisord": True,
                   "stopped_orphans": orphans}
    else:  # it ran, or was started meanwhile (the agent's recovery) perhaps from the previous `current`
        changes = apply_config(root, new_runtime=old_runtime not in (None, runtime_id))
    start = [g for a in args[2:] if a.startswith("--start=") for g in a[len("--start="):].split(",") if g]
    if start:  # owners that run nowhere yet start right away: one round trip less
        # a supervisord started just now read this generation's config: nothing to reload
        changes["started"] = act_start(root, start, snapshot=False, reload=orphans is None)  # one snapshot, below
    write_snapshot(root)
    return {"previous": previous, "generation": generation, **changes}


def act_start(root: str, args: list[str], snapshot: bool = True, reload: bool = True) -> dict:
    """Start whole groups (an instance's ranks on this host) at once, each with the current
    generation's config; returns when spawned. A deliberate start gives the gang a fresh
    restart budget (clears FAILED) and ends any wait recorded for it."""
    server = rpc(root, STOP_RPC_TIMEOUT)
    if reload:
        reload_groups(server, args)
    # first: while they are stopped and not yet marked to run, no poll of the agent takes the
    # wait for a death (the window between desired.json and the start is as short as it can be)
    leftovers = stop_leftovers(root, args)  # never a start against a port the last run's leftovers hold
    update_state(root, "gang.json", {g: None for g in args})
    update_state(root, "waiting.json", {g: None for g in args})
    hashes = {p["owner"]: p["owner_hash"] for p in (read_manifest(root) or {}).get("programs", [])}
    update_state(root, "started.json", {g: {"generation": current_generation(root), "owner_hash": hashes.get(g)}
                                        for g in args})
    with state_lock(root):  # wanted and started as one step for the agent's poll (it reads both under this
        update_state(root, "desired.json", {g: True for g in args})  # lock): never "wanted, still STOPPED"
        started_at = time.time()
        for group in args:
            server.supervisor.startProcessGroup(group, False)  # spawned (STARTING) when it returns
    if snapshot:
        write_snapshot(root)
    return {"started_at": started_at, "groups": args, **_stopped(leftovers)}


def _stopped(leftovers: dict) -> dict:
    """A stop_leftovers result as an action reports it: only when it found something."""
    if not leftovers["stopped"] and not leftovers["containers"]:
        return {}
    return {"stopped_leftovers": [{k: p[k] for k in ("pid", "name", "group")} for p in leftovers["stopped"]]
            + [{"container": c["id"][:12], "name": c["program"]} for c in leftovers["containers"]],
            "leftover_survivors": leftovers["survivors"]}


def act_stop(root: str, args: list[str]) -> dict:
    server = rpc(root, STOP_RPC_TIMEOUT)
    update_state(root, "waiting.json", {g: None for g in args})  # a deliberate stop ends any wait
    drop_intents(root, args)  # and any gang restart the agent had begun (not resumed by a new agent)
    for group in args:
        set_desired(root, group, False)  # before stopping: the agent must not see a failure
        server.supervisor.stopProcessGroup(group, True)
    leftovers = stop_leftovers(root, args)  # what left the groups or outlived their programs
    write_snapshot(root)
    return {"stopped": args, **_stopped(leftovers)}


def act_restore(root: str, args: list[str]) -> dict:
    """A deliberate stop or start of these gangs failed on another host (SSH lost), leaving half
    a gang: mark them to run and stop what runs of them here, so the agent sees a gang that
    should run and does not, and the gang's leader restarts it on every member over the agent
    port. Deliberate, so a fresh restart budget, and no wait left standing."""
    server = rpc(root, STOP_RPC_TIMEOUT)
    update_state(root, "gang.json", {g: None for g in args})
    update_state(root, "waiting.json", {g: None for g in args})
    update_state(root, "desired.json", {g: True for g in args})
    for group in args:
        server.supervisor.stopProcessGroup(group, True)
    stop_leftovers(root, args)
    write_snapshot(root)
    # wake the agent now: a group that was stopped already changes no state, so no event would
    # tell it, and its 60 s tick would leave the gang half down until then
    server.supervisor.sendRemoteCommEvent(WAKE_AGENT, ",".join(args))
    return {"restoring": args}


def act_prune(root: str, args: list[str]) -> dict:
    """Stop and remove the groups the current generation no longer has."""
    server = rpc(root, STOP_RPC_TIMEOUT)
    removed = server.supervisor.reloadConfig()[0][2]
    for group in removed:
        set_desired(root, group, False)  # a deliberate stop: the agent must not restart it
        server.supervisor.stopProcessGroup(group, True)
        server.supervisor.removeProcessGroup(group)
    if removed:
        stop_leftovers(root, removed)
    update_state(root, "started.json", {g: None for g in removed})
    write_snapshot(root)
    return {"removed": removed}


def act_wait(root: str, args: list[str]) -> dict:
    """Record that groups wait for dependencies that are not ready (stdin: {group: {on, reason}});
    `status` shows it until the group is started."""
    marks = json.loads(upload.read_stdin() or b"{}")
    update_state(root, "waiting.json", {g: {**m, "since": time.time()} for g, m in marks.items()})
    write_snapshot(root)
    return {"waiting": sorted(marks)}


def act_secret(root: str, args: list[str]) -> dict:
    """Install the deployment's agent key (stdin) or, with --reveal, hand it to the operator."""
    if "--reveal" in args:
        key = secret(root)
        return {"secret": key.decode() if key else None}
    os.makedirs(os.path.join(root, "state"), exist_ok=True)
    write_secret(root, upload.read_stdin().strip(), "--force" in args)
    write_snapshot(root)
    key = secret(root)
    return {"secret_id": hashlib.sha256(key).hexdigest()[:12] if key else None}


def act_down(root: str, args: list[str]) -> dict:
    purge = "--purge" in args
    if os.path.isdir(os.path.join(root, "state")):
        write_json(state_path(root, "desired.json"), {})
        drop_intents(root, list(read_json(state_path(root, "gang.json"), {})))  # no restart resumed after it
    stopped = shutdown(root)
    # a dead supervisord's processes run on: `down` stops them too
    orphans = stop_orphans(root) if os.path.isdir(os.path.join(root, "run")) else []
    for leftover in (os.path.join(root, "run", "supervisor.sock"), os.path.join(root, "run", "supervisord.pid"),
                     subreaper_path(root),
                     state_path(root, "snapshot.json"), state_path(root, "agent.pid")):
        if os.path.lexists(leftover):
            os.unlink(leftover)
    if purge and os.path.isdir(root):
        _purge(root)
    return {"stopped_supervisord": stopped, "purged": purge, "stopped_orphans": orphans}


# what `down --purge` keeps: the fencing high-water mark and the lock's token counter (the
# running `down` holds that lock): a purged host must still refuse a command whose lease was broken
FENCING_FILES = ("fence", "lock.json")


def _purge(root: str) -> None:
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name == "state" and os.path.isdir(path) and not os.path.islink(path):
            for sub in os.listdir(path):
                if sub not in FENCING_FILES:
                    _remove(os.path.join(path, sub))
        else:
            _remove(path)


def _remove(path: str) -> None:
    import shutil
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


FOLLOW_MAX = 1 << 20  # bytes of one program's log sent per `logs -f` poll


def _log_since(path: str, offset: int | None, lines: int) -> tuple[list[str], int]:
    """Complete lines after byte ``offset`` (None: the last ``lines``), and the offset after them.

    A log shorter than ``offset`` was rotated: it is read from its start. A partial last line
    waits for its newline, so `logs -f` never prints one line as two."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = max(0, size - 256 * 1024) if offset is None else offset if offset <= size else 0
            fh.seek(start)
            data = fh.read(min(size - start, FOLLOW_MAX))
    except OSError:
        return [], offset or 0
    cut = data.rfind(b"\n") + 1
    if cut or len(data) < FOLLOW_MAX:  # else one line longer than a poll's budget goes out in parts
        data = data[:cut]
    text = data.decode("utf-8", "replace").splitlines()
    return (text if offset is not None else text[-lines:] if lines else []), start + len(data)


def act_logs(root: str, args: list[str]) -> dict:
    """Last ``args[0]`` lines of each named program's log, or with PROGRAM@OFFSET what came after OFFSET;
    "offsets" says where each read ended (the next `logs -f` poll asks from there)."""
    lines = int(args[0])
    out, offsets = {}, {}
    for spec in args[1:]:
        program, at, since = spec.partition("@")
        path = os.path.join(root, "logs", f"{os.path.basename(program)}.log")
        out[program], offsets[program] = _log_since(path, int(since) if at else None, lines)
    return {"logs": out, "offsets": offsets}


def act_events(root: str, args: list[str]) -> dict:
    """The event journal's entries from time ``args[0]`` on (host clock; events.py)."""
    from .events import read
    return {"events": read(root, float(args[0]) if args else 0.0), "time": time.time()}


def act_relay(root: str, args: list[str]) -> dict:
    """Send one signed message to another host's agent (ADDRESS PORT HOST), from this host: the
    operator's way to a host whose SSH is lost while its agent port is not (a rolled-back
    switch there). stdin: the message body (JSON). Returns the agent's reply."""
    import sys
    from .messages import send_signed
    address = args[0]
    port = int(args[1]) if len(args) > 1 else read_json(os.path.join(root, "current", "gang.json"), {})["agent_port"]
    try:
        return send_signed(root, address, port, json.loads(sys.stdin.buffer.read() or b"{}"), RELAY_TIMEOUT,
                           to=args[2] if len(args) > 2 else "")
    except RuntimeError as exc:
        raise RuntimeError(f"the agent at {address}:{port} answered: {exc}") from None
