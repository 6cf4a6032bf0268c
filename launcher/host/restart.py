"""A gang's restart by its leader's agent, crash-safe: the intent is on disk before anything is stopped.

The leader, holding the gang's lock, decides (the budget, a configuration error), then records
the restart's intent in the gang's record (state/gang.json `intent`: the report, the backoff),
stops the gang on every member, waits the backoff and for what the gang depends on, checks
(before the stop, and again right before the start) that every member is on the same generation, starts it on all of them
at once and only then drops the intent with the record of the restart. An agent that dies
anywhere in between (kill -9, or `up` restarting it with a new runtime) leaves the intent, and
the next agent resumes it (resume_intents): the gang is never left stopped because its agent
died. A deliberate start or stop (host actions) removes the intent: the agent neither resumes
it nor records over the operator's decision.
"""
from __future__ import annotations

import os
import threading
import time

from .followers import tell_followers, wait_for_leaders
from .gangstart import start_leader_first
from .members import Unreachable, failure_cause, held_gangs, log, seen_before_restart, wait_for_members
from .metrics import counted, restart_cause
from .restart_policy import restart_backoff, restart_when
from .snapshot import write_snapshot
from .state import read_json, state_lock, state_path, update_state, write_json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi

ATTEMPTS = 3    # a restart a member refused (it answered with an error) is tried again, then FAILED
EX_CONFIG = 78  # sysexits.h; the launch script exits so when it cannot apply the topology's limits
UNKNOWN_GENERATION = "?"  # a member whose agent predates the `generation` op


def handle_failure(agent: AgentApi, group: str, report: dict) -> None:
    """A failure report for a gang this agent leads (or an intent or wait a previous agent left)."""
    gang = agent.conf()["gangs"].get(group)
    if gang is None:
        return
    lock = agent.locks.setdefault(group, threading.Lock())
    if not lock.acquire(blocking=False):
        # a restart of this gang is under way: look at this report when it is done (a rank that
        # dies right after the restart must not be lost; one of the replaced run is dropped then)
        agent.pending[group] = report
        return
    try:
        record = read_json(state_path(agent.root, "gang.json"), {}).get(group) or {}
        why = None if record.get("intent") else seen_before_restart(report, record)
        if why:
            log(f"gang {group}: dropped the report of {report.get('program')} on {report.get('host')}: {why}")
            return
        attempt, error = 0, None
        while attempt < ATTEMPTS:
            try:
                restart(agent, group, gang, report)
                return
            except Unreachable as exc:  # wait for it: no restart budget or attempt spent on a partition
                log(f"gang {group}: cannot restart it: {exc}")
                if not wait_for_members(agent, group, gang, exc, report):
                    return
            except Exception as exc:  # a member that refused: try the whole gang again
                attempt += 1
                log(f"gang {group}: restart attempt {attempt} failed: {exc}")
                error = exc
        reason = f"restart failed {ATTEMPTS} times: {error}"
        record_failed(agent.root, group, reason, report)
        log(f"gang {group}: FAILED: {reason}")
        try:
            agent.all_members(gang, f"stop:{group}")
        except Exception as exc:
            log(f"gang {group}: could not stop it everywhere: {exc}")
    finally:
        if group in held_gangs(agent.root):  # resumed after an agent restart, and done with
            update_state(agent.root, "waiting.json", {group: None})
            write_snapshot(agent.root)
        lock.release()
        if (pending := agent.pending.pop(group, None)) is not None:
            agent.task(handle_failure, agent, group, pending)


def record_failed(root: str, group: str, reason: str, report: dict) -> None:
    """The gang's FAILED record in state/gang.json (why, and the failed rank's last log lines),
    kept until a deliberate start; `status` shows it from the snapshot. Any intent ends here."""
    with state_lock(root):
        path = state_path(root, "gang.json")
        states = read_json(path, {})
        st = {k: v for k, v in states.get(group, {"restarts": 0, "history": []}).items() if k != "intent"}
        st.update(state="FAILED", reason=reason, last_log=report.get("log", []), failed_at=time.time())
        states[group] = st
        write_json(path, states)
    write_snapshot(root)


def _drop_intent(root: str, group: str, intent: dict) -> None:
    with state_lock(root):
        states = read_json(state_path(root, "gang.json"), {})
        st = states.get(group) or {}
        if (st.get("intent") or {}).get("id") == intent["id"]:
            update_state(root, "gang.json", {group: {k: v for k, v in st.items() if k != "intent"}})


def _still_mine(root: str, group: str, intent: dict) -> bool:
    """False once a deliberate start or stop (or FAILED) replaced the record this restart began."""
    st = read_json(state_path(root, "gang.json"), {}).get(group) or {}
    return (st.get("intent") or {}).get("id") == intent["id"]


def _resumes(root: str, group: str) -> bool:
    return bool((read_json(state_path(root, "gang.json"), {}).get(group) or {}).get("intent"))


def _begin(agent: AgentApi, group: str, gang: dict, report: dict, conf: dict) -> dict | None:
    """Decide, under the state lock, and write the intent before anything is stopped; the intent,
    or None when the gang is not restarted (FAILED: stopped here). A previous agent's intent is resumed."""
    cause = failure_cause(report)
    stop_it = None
    with state_lock(agent.root):
        path = state_path(agent.root, "gang.json")
        states = read_json(path, {})
        st = states.get(group, {"state": "RUNNING", "restarts": 0, "history": []})
        if st["state"] == "FAILED":
            return None
        if st.get("intent"):
            log(f"gang {group}: resuming its restart ({st.get('reason')})")
            return {**st["intent"], "resumed": True}
        now = time.time()
        history = [t for t in st.get("history", []) if now - t < conf["restart_window"]]
        if report.get("exitstatus") == EX_CONFIG:  # e.g. a limit the login cannot grant: the same again next time
            log(f"gang {group}: {cause}: a configuration error a restart cannot fix: FAILED, stopping it")
            stop_it = f"{cause}: a configuration error (exit {EX_CONFIG}), not restarted"
        elif len(history) >= conf["restart_max"]:
            log(f"gang {group}: {cause}; restart budget ({conf['restart_max']} in "
                f"{conf['restart_window']:.0f} s) spent: FAILED, stopping it on all hosts")
            stop_it = cause
        else:
            backoff = restart_backoff(len(history))
            intent = {"id": os.urandom(8).hex(), "report": report, "backoff": backoff, "since": now}
            st.update(state="RESTARTING", reason=cause, last_log=report.get("log", []), backoff=backoff,
                      history=history, intent=intent)
            states[group] = st
            write_json(path, states)
            log(f"gang {group}: {cause}; stopping it on {len(gang['members'])} hosts, " + restart_when(backoff))
            return intent
    record_failed(agent.root, group, stop_it, report)
    agent.all_members(gang, f"stop:{group}")
    return None


def restart(agent: AgentApi, group: str, gang: dict, report: dict) -> None:
    """Stop the gang everywhere, wait (backoff, dependencies), start it everywhere at once."""
    conf = agent.conf()
    if not _resumes(agent.root, group) and generations_differ(agent, group, gang, failure_cause(report)):
        return  # held running as it is: a gang of two configs is not started (asked again before the start)
    intent = _begin(agent, group, gang, report, conf)
    if intent is None:
        return
    agent.all_members(gang, f"stop:{group}")
    wait = intent["backoff"]
    if intent.get("resumed"):  # what is left of it
        wait = min(wait, intent["since"] + wait - time.time())
    if wait > 0:
        time.sleep(wait)
    runs = wait_for_leaders(agent, group, gang)  # what it depends on ready; what it follows not restarting
    # the generations again, right before the start: a switch during the backoff or the wait counts
    if runs is None or generations_differ(agent, group, gang, failure_cause(intent["report"])):
        _drop_intent(agent.root, group, intent)  # an operator took over, or the gang is held: not resumed
        return
    if not _still_mine(agent.root, group, intent):
        log(f"gang {group}: started or stopped deliberately meanwhile: not started by its agent")
        return
    started = start_leader_first(agent, gang, group)
    with state_lock(agent.root):
        path = state_path(agent.root, "gang.json")
        states = read_json(path, {})
        st = states.get(group) or {}
        if (st.get("intent") or {}).get("id") != intent["id"]:
            log(f"gang {group}: its record was reset meanwhile (a deliberate start): not recorded over")
            return
        now = time.time()
        history = [t for t in st.get("history", []) if now - t < conf["restart_window"]] + [now]
        st = {k: v for k, v in st.items() if k != "intent"}
        st.update(state="RUNNING", restarts=st.get("restarts", 0) + 1,
                  causes=counted(st, restart_cause(intent["report"])), history=history, last_restart=now,
                  skew=max(started.values()) - min(started.values()), started=started,
                  followed={**st.get("followed", {}), **runs})
        states[group] = st
        write_json(path, states)
    write_snapshot(agent.root)
    log(f"gang {group}: restarted on all hosts (restart {st['restarts']}, start skew "
        f"{st['skew'] * 1000:.0f} ms)")
    if gang.get("followers"):  # restart_with: they restart once this run passes its probes
        agent.task(tell_followers, agent, group, gang, st["last_restart"])


def generations_differ(agent: AgentApi, group: str, gang: dict, cause: str) -> bool:
    """Hold a gang whose members are on different generations (a failed `up` that could not
    put every host back), asked right before its start: restarted, it would be one HCCL world
    of two configs. The hold is recorded as a wait (`status` shows why) until a deliberate
    start (`up`) ends it."""
    host = agent.conf()["host"]

    def generation(m: dict) -> str | None:
        if m["host"] == host:
            return agent.dispatch({"op": "generation", "group": group})["generation"]
        try:
            return agent.send(m, {"op": "generation", "group": group})["generation"]
        except OSError as exc:  # no answer: the gang waits for the host (handle_failure), not a refusal
            raise Unreachable([m["host"]], f"member {m['host']} ({m['address']}) unreachable: {exc}") from None
        except RuntimeError as exc:
            if "unknown op" in str(exc):  # an older agent, until the switch restarts it: not known
                return UNKNOWN_GENERATION
            raise
    outcomes = agent.each(generation, gang["members"])
    cut = [o for o in outcomes if isinstance(o, Unreachable)]
    if cut:
        raise Unreachable([h for e in cut for h in e.hosts], "; ".join(map(str, cut)))
    for o in outcomes:
        if isinstance(o, BaseException):
            raise o
    gens = {m["host"]: o for m, o in zip(gang["members"], outcomes)}
    if len(set(gens.values()) - {UNKNOWN_GENERATION}) < 2:
        return False
    on = ", ".join(f"{h} on {g or 'nothing'}" for h, g in sorted(gens.items()))
    reason = f"not restarted: its hosts are on different generations ({on}); `launcher up` makes them agree"
    log(f"gang {group}: {cause}; {reason}")
    update_state(agent.root, "waiting.json", {group: {"on": ["hosts on different generations"],
                                                      "reason": reason, "since": time.time()}})
    write_snapshot(agent.root)
    return True


def resume_intents(agent: AgentApi) -> None:
    """At an agent's start: go on with what the previous one left, the waits for members and
    the restarts it had begun (their intents), each once."""
    here = agent.conf()
    held = held_gangs(agent.root)
    for group, report in held.items():
        log(f"gang {group}: resuming the wait for its members")
        agent.task(handle_failure, agent, group, report)
    for group, st in read_json(state_path(agent.root, "gang.json"), {}).items():
        gang = here["gangs"].get(group)
        if (isinstance(st, dict) and isinstance(st.get("intent"), dict) and group not in held and gang
                and gang["leader"] == here["host"]):
            log(f"gang {group}: a restart its previous agent began is resumed")
            agent.task(handle_failure, agent, group, st["intent"]["report"])
