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

import json
import sys

from . import upload
from .actions import (act_down, act_logs, act_prepare, act_prune, act_restore, act_secret, act_start, act_state, act_stop,
                      act_switch, act_wait)
from .linkcheck import act_linkcheck
from .probes import act_probe, act_tcpcheck
from .supervisor_rpc import supervisord_alive  # noqa: F401  (bench/host_cpu.py asks it here)

# io, shutil, subprocess (and tarfile, zipfile, urllib) are imported by the actions that need
# them: `state`, on every status, imports none of them

STDIN: bytes | None = None  # set by the bootstrap when it has already read stdin
# prepare's upload as (name, mode, content) of regular files, already read and checked by the
# bootstrap (remote.BOOTSTRAP); None when run otherwise, then stdin is read here
UPLOAD: list[tuple[str, int, bytes]] | None = None

ACTIONS = {"state": act_state, "prepare": act_prepare, "switch": act_switch, "start": act_start,
           "stop": act_stop, "prune": act_prune, "restore": act_restore, "wait": act_wait, "down": act_down, "logs": act_logs,
           "secret": act_secret,
           "linkcheck": act_linkcheck, "tcpcheck": act_tcpcheck, "probe": act_probe}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ACTIONS:
        print(json.dumps({"error": f"usage: hostside {{{','.join(ACTIONS)}}} ROOT ..."}))
        return 2
    action, root = argv[0], argv[1]
    upload.STDIN, upload.UPLOAD = STDIN, UPLOAD  # as the bootstrap set them, after importing us
    try:
        result = ACTIONS[action](root, argv[2:])
    except Exception as exc:  # the operator side turns this into "host X: ..."
        print(json.dumps({"error": f"{action}: {type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
