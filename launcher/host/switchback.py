"""A rolled-back switch finished through the agent, for a host whose SSH was lost mid-`up`.

`up` switches every host, and when one fails puts all of them back. A host whose sshd died
may have switched (the reply was lost) and cannot be put back over SSH; its agent still
answers on the agent port. The operator side relays a signed `switch-back` through a host it
can reach (actions.act_relay), and this agent runs the same host action the operator would
have run (`switch PREVIOUS RUNTIME --if-current=NEW`: compare-and-swap, so a later `up`'s
switch is never undone). It runs as a process of its own session: the switch may restart this
agent (its config or runtime changed), and must not die with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

SWITCH_TIMEOUT = 120.0

_RUN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from launcher.host import hostside; sys.exit(hostside.main())"


def _safe(name: object) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a generation or runtime id: {name!r}")
    return name


def switch_back(root: str, body: dict) -> dict:
    generation = body.get("generation")
    generation = "-" if generation == "-" else _safe(generation)
    runtime, only_from = _safe(body.get("runtime")), _safe(body.get("if_current"))
    if generation != "-" and not os.path.isdir(os.path.join(root, "gens", generation)):
        raise ValueError(f"generation {generation} is not on this host")
    site = os.path.join(root, "runtime", runtime, "site.zip")
    if not os.path.isfile(site):
        raise ValueError(f"runtime {runtime} is not on this host")
    # not the agent's SUPERVISOR_* variables: outliving the agent, it would pass for a program's leftover
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    res = subprocess.run([sys.executable, "-S", "-c", _RUN, site, "switch", root, generation, runtime,
                          f"--if-current={only_from}"], cwd="/", env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, timeout=SWITCH_TIMEOUT, start_new_session=True)
    lines = res.stdout.decode("utf-8", "replace").strip().splitlines()
    reply = json.loads(lines[-1]) if lines else {"error": res.stderr.decode("utf-8", "replace")[-500:]}
    if "error" in reply:
        raise RuntimeError(f"switch back failed: {reply['error']}")
    return {"ok": True, **reply}
