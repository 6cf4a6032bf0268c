"""A multi-host gang's first start, all at once: the leader's agent starts every member over the agent port.

A cold `up` uploads to every host, and a host's ranks started inside its upload call would
begin as soon as that host is ready: the gang's start would spread over the whole upload
round. On the 200-host testbed that was over 60 s, past the demo ranks' barrier timeout, so
the first world never formed and was restarted. So `up` starts a gang whose hosts were all
blank only after every one of them is ready: one SSH call to the leader's host (the action
``gang-start``), whose agent then starts the members at once over the connections it already
signs for. No SSH session and no Python start per member, and a skew of one agent round trip.

Each member's agent was started by its own upload call a moment ago and may not listen yet:
a refused connection is tried again until AGENT_WAIT. Anything else (a wrong key, an agent
that answers with an error, no answer) fails the start, naming the member.
"""
from __future__ import annotations

import os
import threading
import time

from .members import log
from .messages import send_signed
from .state import read_json, update_state

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Callable, TypeVar

    from .agent_api import AgentApi
    T = TypeVar("T")

AGENT_WAIT = 30.0    # s a just-started agent may take to listen (its Python start on a busy host)
RETRY = 0.05         # s between tries of a refused connection
START_TIMEOUT = 120.0  # s one member's start may take (its supervisord spawns the programs)


def _refused_until(deadline: float, attempt: Callable[[], T]) -> T:
    """Call ``attempt()`` until it does not raise ConnectionRefusedError or the deadline passes."""
    while True:
        try:
            return attempt()
        except ConnectionRefusedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(RETRY)


def start_gangs(agent: AgentApi, groups: list[str]) -> dict:
    """The agent's ``gang-start`` op: start each of ``groups`` (gangs this agent leads) on all of
    its members at once; returns {"ok": True, "started": {group: {host: started_at}}}."""
    conf = agent.conf()
    for group in groups:
        gang = conf["gangs"].get(group)
        if gang is None or gang["leader"] != conf["host"]:
            leader = gang["leader"] if gang else None
            return {"ok": False, "error": f"{conf['host']} does not lead {group!r}"
                                          + (f" (its leader is {leader})" if leader else " (no such gang)")}
    started: dict[str, dict[str, float]] = {}
    for group in groups:
        gang = conf["gangs"][group]
        lock = agent.locks.setdefault(group, threading.Lock())
        with lock:  # a failure report arriving meanwhile waits for this start (agent.pending)
            # deliberate, as `start` is: a fresh restart budget, no wait left standing
            update_state(agent.root, "gang.json", {group: None})
            update_state(agent.root, "waiting.json", {group: None})
            deadline = time.monotonic() + AGENT_WAIT
            try:
                times = start_leader_first(agent, gang, group,
                                           lambda others: _start_each(agent, conf, others, group, deadline))
            except Exception as exc:
                log(f"gang {group}: the start `up` asked for failed: {exc}")
                return {"ok": False, "error": f"gang {group}: {exc}"}
            started[group] = times
            log(f"gang {group}: started on {len(times)} hosts at once, as `up` asked (start skew "
                f"{(max(times.values()) - min(times.values())) * 1000:.0f} ms)")
    return {"ok": True, "started": started}


def start_leader_first(agent: AgentApi, gang: dict, group: str,
                       start_others: Callable[[list[dict]], list[dict]] | None = None) -> dict[str, float]:
    """Start ``group`` on every member: this host's first (the leader's: rank 0, whom the peers
    connect to; started among 127 sending threads it came last on 200 hosts, and every peer
    retried its connection until then), then the others at once with ``start_others`` (default:
    Agent.all_members, which raises Unreachable naming the members that did not answer).
    This host's snapshot is written after the others were asked, so their start does not wait
    for it, and before this returns (what the reply reports, `status` shows). Returns {host: started_at}."""
    from .snapshot import write_snapshot  # loaded in the agent already; not in the host action below
    here = agent.conf()["host"]
    local = any(m["host"] == here for m in gang["members"])
    started = {here: agent.local_start(group, snapshot=False)["started_at"]} if local else {}
    try:
        others = [m for m in gang["members"] if m["host"] != here]
        if start_others is None:
            start_others = lambda ms: agent.all_members({**gang, "members": ms}, f"start:{group}")  # noqa: E731
        replies = start_others(others) if others else []
    finally:
        if local:
            write_snapshot(agent.root)
    return {**started, **{m["host"]: r["started_at"] for m, r in zip(others, replies)}}


def _start_each(agent: AgentApi, conf: dict, members: list[dict], group: str, deadline: float) -> list[dict]:
    """`up`'s start of ``members`` at once, each retried while its agent does not listen yet;
    RuntimeError naming every member that failed."""
    outcomes = agent.each(lambda m: _start_member(agent, conf, m, group, deadline), members)
    errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise RuntimeError("; ".join(errors))
    return [o for o in outcomes if not isinstance(o, BaseException)]


def _start_member(agent: AgentApi, conf: dict, member: dict, group: str, deadline: float) -> dict:
    where = f"member {member['host']} ({member['address']})"
    try:
        return _refused_until(deadline, lambda: agent.send(member, {"op": "start", "group": group},
                                                            timeout=START_TIMEOUT))
    except ConnectionRefusedError:
        raise RuntimeError(f"{where}: its agent does not listen on port {conf['agent_port']} "
                           f"({AGENT_WAIT:.0f} s after its upload)") from None
    except OSError as exc:  # no route, filtered, timed out: the hosts' agents cannot talk
        raise RuntimeError(f"{where}: cannot reach its agent on port {conf['agent_port']}: {exc}") from None
    except RuntimeError as exc:  # it answered with an error (a wrong key, a failed start)
        raise RuntimeError(f"{where}: {exc}") from None


def act_gangstart(root: str, args: list[str]) -> dict:
    """Host action ``gang-start GROUP...`` on the gangs' leader host: ask the local agent to start
    them on all their members at once; returns {"started": {group: {host: started_at}}}."""
    conf = read_json(os.path.join(root, "current", "gang.json"), None)
    if not isinstance(conf, dict):
        raise RuntimeError("no current generation here (gang.json missing)")
    target = (conf["address"], conf["agent_port"])

    def ask() -> dict:
        return send_signed(root, target[0], target[1], {"op": "gang-start", "groups": args}, START_TIMEOUT + 10,
                           to=conf["host"])
    try:
        reply = _refused_until(time.monotonic() + AGENT_WAIT, ask)
    except ConnectionRefusedError:
        raise RuntimeError(f"the agent does not listen on {target[0]}:{target[1]} "
                           f"({AGENT_WAIT:.0f} s after the upload)") from None
    except RuntimeError as exc:
        raise RuntimeError(f"agent: {exc}") from None
    return {"started": reply["started"]}
