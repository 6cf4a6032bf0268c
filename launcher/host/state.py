"""The files under ROOT that the host actions and the agent share: state/*, `current`, the logs.

ROOT (``<deploy_dir>/<deployment>/<host>``, laid out in hostside.py) holds state/: desired.json
(groups that should run), gang.json (the leader's record per gang), started.json (the config
each group was started from), waiting.json (groups waiting for dependencies, for a leader, or
for unreachable members: members.py), secret (0600), snapshot.json and agent.pid; state.lock (the flock every read-modify-write of
them takes: the agent's threads and the host actions, which are other processes), nonces (the
agent's replay cache: messages.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Any


# A root holding none of these has nothing of the deployment: no generation, no supervisord, no
# key, no gang records (remote.FAST_STATE's test, the lock host's hint and `prepare --if-blank`)
BLANK_MARKS = ("current", "run/supervisor.sock", "state/secret", "state/gang.json", "state/started.json",
               "state/waiting.json")


def is_blank(root: str) -> bool:
    return not any(os.path.lexists(os.path.join(root, mark)) for mark in BLANK_MARKS)


def state_path(root: str, name: str) -> str:
    return os.path.join(root, "state", name)


def read_json(path: str, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def write_json(path: str, doc: Any, mode: int = 0o644) -> None:
    """Write-then-rename, so a reader never sees half a file; fsynced before the rename, so a power
    loss leaves the old file or the new one, never an empty one (ext4/xfs may reorder otherwise)."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class StateLock:
    """One read-modify-write of ROOT's state files at a time, across threads and processes: an
    flock on state/state.lock (the host actions are other processes than the agent; with a
    thread lock only, a budget reset by `up` could be undone by a restart writing its record).
    Re-entrant in one thread, so a locked update may call update_state."""

    def __init__(self) -> None:
        self.local = threading.local()

    def __call__(self, root: str) -> StateLock:
        self.local.root = root
        return self

    def __enter__(self) -> None:
        held = getattr(self.local, "held", None)
        if held is not None:
            held[1] += 1
            return
        fd = os.open(state_path(self.local.root, "state.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.local.held = [fd, 1]

    def __exit__(self, *exc: object) -> None:
        held = self.local.held
        held[1] -= 1
        if held[1] == 0:
            self.local.held = None
            os.close(held[0])  # closing the last descriptor releases the flock


state_lock = StateLock()


def update_state(root: str, name: str, changes: dict) -> None:
    """Merge ``changes`` into state/NAME (a None value deletes the key) under state_lock; no
    write when that changes nothing (every file a cold host creates costs it a create under the journal)."""
    with state_lock(root):
        path = state_path(root, name)
        doc = read_json(path, {})
        before = dict(doc)
        for k, v in changes.items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        if doc != before:
            write_json(path, doc)


def drop_intents(root: str, groups: list[str]) -> None:
    """A deliberate stop: no restart the agent had begun of these gangs is resumed (agent.py's intent)."""
    with state_lock(root):
        gangs = read_json(state_path(root, "gang.json"), {})
        if any(isinstance(gangs.get(g), dict) and "intent" in gangs[g] for g in groups):
            update_state(root, "gang.json", {g: {k: v for k, v in gangs[g].items() if k != "intent"}
                                             for g in groups if isinstance(gangs.get(g), dict)})


def set_desired(root: str, group: str, run: bool) -> None:
    """Record whether a group should run: the agent restarts only groups that should."""
    update_state(root, "desired.json", {group: run})


def desired(root: str) -> dict[str, bool]:
    return read_json(state_path(root, "desired.json"), {})


def read_gang_state(root: str) -> dict:
    return read_json(state_path(root, "gang.json"), {})


def secret(root: str) -> bytes | None:
    try:
        with open(state_path(root, "secret"), "rb") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def write_secret(root: str, data: bytes, force: bool) -> None:
    """Install the deployment's agent key (0600); an existing one is kept unless ``force``."""
    path = state_path(root, "secret")
    if not data or (secret(root) is not None and not force):
        return
    fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(f"{path}.tmp", path)


def current_generation(root: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(root, "current")))
    except OSError:
        return None


def read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "current", "manifest.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a log (read from its last 256 KiB only); [] when unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines else []
