"""A gang's restart held until what it depends on passes its probes (the agent's dependency wait)."""
from __future__ import annotations

import time

from .members import log
from .probes import probe_once
from .snapshot import write_snapshot
from .state import read_json, state_path, update_state

DEPENDENCY_POLL = 2.0  # how often a gang waiting for its dependencies probes them again


def wait_for_dependencies(root: str, group: str, gang: dict) -> bool:
    """Hold a gang's restart until what it depends on passes its probes (etcd back, ...);
    waiting spends no restart budget, and `status` shows what it waits for. False when
    someone else took over meanwhile (a deliberate stop, or `up` started it)."""
    since = None
    while True:
        why = [f"{d['owner']}: {spec['kind']} {spec['target']}: {err}" for d in gang.get("depends", [])
               for spec in d["probes"] if (err := probe_once(root, spec))]
        if not why:
            break
        if since is None:
            since = time.time()
            on = list(dict.fromkeys(w.split(":", 1)[0] for w in why))
            log(f"gang {group}: waits for {', '.join(on)} before it starts again: {why[0]}")
            update_state(root, "waiting.json", {group: {"on": on, "reason": "; ".join(why), "since": since}})
            write_snapshot(root)
        time.sleep(DEPENDENCY_POLL)
        if not read_json(state_path(root, "waiting.json"), {}).get(group):
            log(f"gang {group}: no longer waiting (stopped or started by the operator)")
            return False
    if since is not None:
        update_state(root, "waiting.json", {group: None})
        log(f"gang {group}: its dependencies are ready after {time.time() - since:.1f} s")
    return True
