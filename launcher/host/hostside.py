"""The entry of every host-side call: runs one action on this host and answers with one JSON object.

Invoked by the operator side over SSH (or locally) through its bootstrap (deploy/remote.py), or
as ``python3 -m launcher.host.hostside ACTION ROOT ...`` with PYTHONPATH at the deployment's
runtime; the host needs nothing but python3 (stdlib only). The actions live by concern in the
modules beside this one. ROOT is ``<deploy_dir>/<deployment>/<host>``:

    ROOT/current -> gens/<generation>     the running generation (switched atomically)
    ROOT/gens/<generation>/               files rendered for this host
    ROOT/runtime/current -> <runtime id>  site.zip (launcher + supervisor packages), bin/
    ROOT/run/                             supervisor.sock (0700 dir), supervisord.pid
    ROOT/logs/                            one log per program, rotated by supervisord
    ROOT/state/                           the agent's gang state (restarts, FAILED reasons)
"""
from __future__ import annotations

import importlib
import json
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Callable

from . import upload

# io, shutil, subprocess (and tarfile, zipfile, urllib) are imported by the actions that need
# them: `state`, on every status, imports none of them; and each action's module is imported
# when it runs (a cold up's `prepare` needs none of check's, nic's or gang-start's)

# prepare's upload as (name, mode, content) of regular files, already read and checked by the
# bootstrap (remote.BOOTSTRAP); None when run otherwise, then stdin is read here
UPLOAD: list[tuple[str, int, bytes]] | None = None

ACTIONS = {"state": "actions", "prepare": "actions", "switch": "actions", "start": "actions",
           "gang-start": "gangstart", "stop": "actions", "prune": "actions", "restore": "actions",
           "relay": "actions", "wait": "actions", "down": "actions", "logs": "actions", "events": "actions",
           "secret": "actions", "linkcheck": "linkcheck", "probe": "probes", "nic": "nic", "check": "checkall"}


def action(name: str) -> Callable[[str, list[str]], dict]:
    """The function of action ``name``: act_<name> in its module (launcher/host/<module>.py)."""
    module = importlib.import_module(f"{__package__}.{ACTIONS[name]}")
    return getattr(module, "act_" + name.replace("-", ""))


LOG_MAX = 1 << 20  # then hostside.log moves to hostside.log.1: a host's disk is not ours to fill


def _log_traceback(root: str, action: str, trace: str) -> None:
    """Keep a failed action's traceback in ROOT/logs/hostside.log (the reply carries only its last line
    unless the operator asks with -v); never recreate a ROOT that is gone (after down --purge)."""
    import time
    if not os.path.isdir(root):
        return
    path = os.path.join(root, "logs", "hostside.log")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path) and os.path.getsize(path) > LOG_MAX:
            os.replace(path, path + ".1")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {action}: {trace}")
    except OSError:
        pass  # a log that cannot be written must not hide the error the reply carries


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ACTIONS:
        print(json.dumps({"error": f"usage: hostside {{{','.join(ACTIONS)}}} ROOT ..."}))
        return 2
    name, root = argv[0], argv[1]
    upload.UPLOAD = UPLOAD  # as the bootstrap set it, after importing us
    try:
        result = action(name)(root, argv[2:])
    except Exception as exc:  # the operator side turns this into "host X: ..."
        import traceback  # only on this path: `state` stays cheap to start
        trace = traceback.format_exc()
        _log_traceback(root, name, trace)
        print(json.dumps({"error": f"{name}: {type(exc).__name__}: {exc}", "traceback": trace}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
