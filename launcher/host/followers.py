"""`restart_with:` between agents: an instance restarts after what it follows, once that is ready again.

A Ray driver whose head restarted has lost its actors, and only a restart of the driver makes it
place them again. The agent that leads a gang with followers (gang.json `followers`), having
restarted it after a crash, waits until the gang's own probes here pass (`ready`: a log probe
cannot tell this run from the last, so it is not one), then tells each follower's leading agent
(signed message `follow`, naming the run: the time of that restart on the sender's clock, an
identity only compared for equality). That agent restarts the follower on all its hosts, unless
it already started it after that run was ready (it records the runs it followed in the gang's
record, `followed`): no restart budget is spent, the restart count goes up.

A follower that crashed meanwhile (the driver dies with its actors) is restarted by its own
agent as any gang, but first asks the leaders of what it follows (`gang-state`) and waits while
one is restarting; then its dependency probes; then it records the runs it followed, so the
`follow` that comes later finds it done. So the follower is never started before what it
follows passed its probes, and not twice for one restart of it.
"""
from __future__ import annotations

import threading
import time

from .dependencies import wait_for_dependencies
from .gangstart import start_leader_first
from .members import log
from .metrics import counted, restart_cause
from .probes import probe_all
from .snapshot import write_snapshot
from .state import desired, read_json, state_lock, state_path, update_state, write_json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi

READY_WAIT = 600.0  # s a restarted gang may take to pass its probes before its followers are told
POLL = 1.0          # s between looks at a gang being restarted or not ready yet
TELL_ATTEMPTS = 10  # a follower's leader that does not answer is asked again, POLL * 2^n apart (capped)


def gang_state(root: str, group: str) -> dict:
    """The `gang-state` op: how this agent's gang runs, and its run (its last restart here, or None)."""
    rec = read_json(state_path(root, "gang.json"), {}).get(group) or {}
    waiting = read_json(state_path(root, "waiting.json"), {}).get(group)
    return {"ok": True, "state": rec.get("state", "RUNNING"), "run": rec.get("last_restart"),
            "waiting": bool(waiting), "desired": bool(desired(root).get(group))}


def _runs(agent: AgentApi, gang: dict) -> dict[str, object] | None:
    """What the gang follows, each leader's run ("owner@host" -> run), or None while one is restarting
    or waiting itself. A leader that does not answer counts as not restarting: the probes decide."""
    runs: dict[str, object] = {}
    for dep in gang.get("restart_with", []):
        for leader in dep["leaders"]:
            try:
                st = agent.send(leader, {"op": "gang-state", "group": dep["owner"]}, timeout=10)
            except (OSError, RuntimeError) as exc:
                log(f"cannot ask {leader['host']} how {dep['owner']} runs: {exc}")
                continue
            if st["state"] != "RUNNING" or st["waiting"]:
                return None
            runs[f"{dep['owner']}@{leader['host']}"] = st["run"]
    return runs


def wait_for_leaders(agent: AgentApi, group: str, gang: dict) -> dict[str, object] | None:
    """Before a follower starts again: wait while what it follows is being restarted, then for
    the dependency probes; the runs it follows now, or None when someone else took over."""
    if not gang.get("restart_with"):
        return {} if wait_for_dependencies(agent.root, group, gang) else None
    said = False
    while True:
        runs = _runs(agent, gang)
        if runs is None:
            if not said:
                log(f"gang {group}: waits while {', '.join(d['owner'] for d in gang['restart_with'])} restarts")
                said = True
            time.sleep(POLL)
            if not desired(agent.root).get(group):
                return None
            continue
        if not wait_for_dependencies(agent.root, group, gang):
            return None
        if _runs(agent, gang) == runs:  # not restarted again meanwhile
            return runs


def tell_followers(agent: AgentApi, group: str, gang: dict, run: float) -> None:
    """Once this gang's run ``run`` passes its probes here, tell its followers' leaders."""
    deadline = time.time() + READY_WAIT
    while True:
        rec = read_json(state_path(agent.root, "gang.json"), {}).get(group) or {}
        if rec.get("last_restart") != run or not desired(agent.root).get(group):
            log(f"gang {group}: restarted or stopped again before it was ready; its followers wait for that")
            return
        errors = [e for e in probe_all(agent.root, gang.get("ready", [])).values() if e]
        if not errors:
            break
        if time.time() > deadline:
            log(f"gang {group}: not ready {READY_WAIT:.0f} s after its restart ({errors[0]}); its followers "
                "were not restarted")
            return
        time.sleep(POLL)
    names = [f["group"] for f in gang["followers"]]
    log(f"gang {group}: ready again after its restart; restarting {', '.join(names)} after it (restart_with)")
    me = agent.conf()["host"]
    for f in gang["followers"]:
        for leader in f["leaders"]:
            body = {"op": "follow", "group": f["group"], "after": group, "host": me, "run": run}
            for attempt in range(TELL_ATTEMPTS):
                try:
                    agent.send(leader, body)
                    break
                except (OSError, RuntimeError) as exc:
                    log(f"gang {group}: cannot tell {leader['host']} to restart {f['group']}: {exc}")
                    time.sleep(min(POLL * 2 ** attempt, 30.0))


def follow(agent: AgentApi, group: str, body: dict) -> None:
    """The `follow` op: restart ``group`` on all its hosts after body['after'] restarted (run
    body['run'] on body['host']), unless it was started after that run already."""
    gang = agent.conf()["gangs"].get(group)
    if gang is None:
        return
    key, run = f"{body['after']}@{body['host']}", body["run"]
    with agent.locks.setdefault(group, threading.Lock()):
        path = state_path(agent.root, "gang.json")
        st = read_json(path, {}).get(group) or {"state": "RUNNING", "restarts": 0, "history": []}
        if st.get("followed", {}).get(key) == run:
            log(f"gang {group}: already started after that restart of {body['after']}")
            return
        if st["state"] == "FAILED" or not desired(agent.root).get(group):
            log(f"gang {group}: not restarted after {body['after']}: it is {st['state']} or stopped")
            return
        st.update(state="RESTARTING", reason=f"{body['after']} on {body['host']} was restarted (restart_with)")
        update_state(agent.root, "gang.json", {group: st})
        log(f"gang {group}: {body['after']} on {body['host']} was restarted and is ready again; restarting "
            f"it on {len(gang['members'])} hosts (restart_with)")
        agent.all_members(gang, f"stop:{group}")
        runs = wait_for_leaders(agent, group, gang)
        if runs is None:
            return
        started = start_leader_first(agent, gang, group)
        st.update(state="RUNNING", restarts=st.get("restarts", 0) + 1, causes=counted(st, restart_cause(None)),
                  last_restart=time.time(), started=started,
                  skew=max(started.values()) - min(started.values()), followed={**st.get("followed", {}), key: run, **runs})
        with state_lock(agent.root):
            states = read_json(path, {})
            states[group] = st
            write_json(path, states)
        write_snapshot(agent.root)
        log(f"gang {group}: restarted on all hosts after {body['after']} (restart {st['restarts']}, "
            "no budget spent: restart_with)")
    if gang.get("followers"):  # a chain: what follows this follower goes next
        agent.task(tell_followers, agent, group, gang, st["last_restart"])
