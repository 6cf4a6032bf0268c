"""The agent's talk between a gang's hosts when the other side does not answer.

A member reports a failure to its leader until the leader takes it (capped backoff), however
long the leader is away; a leader holds a gang whose members do not answer until they do,
then restarts it. Neither spends the restart budget on a partition, and both record the wait
in state/waiting.json, so `status` shows the gang WAITING and on which host. A report is about
the run it was seen in (the generation, the program's start): once superseded (a deliberate
start or stop, a new generation, the program started again) it is dropped, so it never
restarts a gang an operator has already brought back.
"""
from __future__ import annotations

import sys
import time

from .snapshot import write_snapshot
from .state import current_generation, desired, read_json, state_path, update_state
from .supervisor_rpc import rpc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from .agent_api import AgentApi

REPORT_BACKOFF_INITIAL = 1.0
REPORT_BACKOFF_MAX = 30.0  # a member reports a failure at least this often until the leader takes it
REPORTING = "reporting"    # waiting.json `kind` of a member's wait for its leader
MEMBER_POLL = 5.0          # how often a gang waiting for an unreachable member asks it again
DEAD = {"EXITED", "FATAL", "STOPPED", "BACKOFF", "UNKNOWN"}


class Unreachable(Exception):
    """Members that did not answer at all (no route, refused, timed out); str() names them."""

    def __init__(self, hosts: list[str], message: str):
        super().__init__(message)
        self.hosts = hosts


_LOG_FILE: list[str] = []  # where the agent's log goes once supervisord's pipe for it breaks


def log_to_file(path: str) -> None:
    """Where `log` writes when its stderr (a pipe to supervisord, which writes the log file) breaks."""
    _LOG_FILE[:] = [path]


def log(msg: str) -> None:
    # the agent's log (stdout is supervisord's event protocol; the log is stderr)
    now = time.time()  # milliseconds: a gang restart's steps are tenths of a second apart
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} agent: {msg}"
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # supervisord died (EPIPE): the log must not take the agent, or its recovery, with it
        if not _LOG_FILE:
            raise
        sys.stderr = open(_LOG_FILE[0], "a", encoding="utf-8")
        print(line, file=sys.stderr, flush=True)


def _wait(agent: AgentApi, group: str, on: list[str], reason: str, since: float, **more: object) -> None:
    update_state(agent.root, "waiting.json", {group: {"on": on, "reason": reason, "since": since, **more}})
    write_snapshot(agent.root)


def _still_waiting(agent: AgentApi, group: str) -> bool:
    """False once a deliberate start or stop (actions.py) cleared the gang's wait."""
    return bool(read_json(state_path(agent.root, "waiting.json"), {}).get(group))


def _end_wait(agent: AgentApi, group: str) -> None:
    update_state(agent.root, "waiting.json", {group: None})
    write_snapshot(agent.root)


def report_to_leader(agent: AgentApi, group: str, gang: dict, report: dict) -> None:
    """Report a member's failure until the leader takes it or the report is superseded."""
    leader = next(m for m in gang["members"] if m["host"] == gang["leader"])
    where = f"leader {leader['host']} ({leader['address']})"
    delay, since = REPORT_BACKOFF_INITIAL, None
    while True:
        why = superseded(agent, group, report, waited=since is not None)
        if why:
            log(f"gang {group}: dropped the report of {report['program']}: {why}")
            break
        try:
            agent.send(leader, {"op": "failed", "group": group, "report": report}, timeout=10)
            if since is not None:
                log(f"gang {group}: {where} took the report after {time.time() - since:.0f} s")
            break
        except (OSError, RuntimeError) as exc:
            reason = f"cannot report the failure of {report['program']} to {where}: {exc}"
            log(f"{reason} (again in {delay:.0f} s)")
            since = since or time.time()
            _wait(agent, group, [leader["host"]], f"{reason}; reporting it until the leader takes it", since,
                  kind=REPORTING)
        time.sleep(delay)
        delay = min(delay * 2, REPORT_BACKOFF_MAX)
    if since is not None:
        _end_wait(agent, group)


def superseded(agent: AgentApi, group: str, report: dict, waited: bool) -> str | None:
    """Why a failure report no longer describes the gang's current run, or None."""
    if not desired(agent.root).get(group):
        return "the gang was stopped deliberately"
    gen = current_generation(agent.root)
    if report.get("generation") != gen:
        return f"it was seen in generation {report.get('generation')}; {gen} runs now"
    if waited and not _still_waiting(agent, group):
        return "the gang was started or stopped deliberately meanwhile"
    try:
        info = rpc(agent.root, 10).supervisor.getProcessInfo(f"{group}:{report['program']}")
    except Exception:
        return None  # cannot tell: keep reporting
    if info["start"] != report.get("start") or info["statename"] not in DEAD:
        return "the program was started again since"
    return None


def failure_cause(report: dict) -> str:
    """What happened to the reported rank, for the log and `status`."""
    code = report.get("exitstatus")
    how = "was killed by a signal" if code == -1 else f"exited with exit code {code}" if report.get("start") \
        else "was not running under a new supervisord"  # the one it ran under died (kill -9, OOM)
    return f"rank program {report['program']} on {report['host']} {how} ({report.get('state')})"


def seen_before_restart(report: dict, record: dict | None) -> str | None:
    """Why a report reaching the leader is about a run its last restart already replaced, or
    None. Both times are the reporting host's clock: the program's start (supervisord, whole
    seconds, so up to 1 s early) and when that host was told to start the gang again."""
    started = ((record or {}).get("started") or {}).get(report.get("host"))
    # start 0: never started by this supervisord (a new one, after the old one died): when it was seen
    start = report.get("start") or report.get("seen")
    if not isinstance(started, (int, float)) or not isinstance(start, (int, float)) or start >= started - 1:
        return None
    return f"it was seen in a run started {started - start:.0f} s before the gang's last restart"


def forget_reporting(root: str) -> None:
    """Drop the waits of a previous agent's reports: it took them along. A rank still dead is
    seen and reported again by this agent's first poll; one restarted meanwhile waits for nothing."""
    waits = read_json(state_path(root, "waiting.json"), {})
    update_state(root, "waiting.json", {g: None for g, w in waits.items()
                                        if isinstance(w, dict) and w.get("kind") == REPORTING})


def held_gangs(root: str) -> dict[str, dict]:
    """Gangs a leader holds for unreachable members (their failure reports), from waiting.json."""
    return {g: w["report"] for g, w in read_json(state_path(root, "waiting.json"), {}).items()
            if isinstance(w, dict) and isinstance(w.get("report"), dict)}


def wait_for_members(agent: AgentApi, group: str, gang: dict, cut: Unreachable, report: dict) -> bool:
    """Hold a gang whose members did not answer until every one of them does again (then
    True: restart it, no operator needed). False when a deliberate start or stop took over."""
    held = read_json(state_path(agent.root, "waiting.json"), {}).get(group) or {}
    since = held.get("since", time.time()) if held.get("report") else time.time()
    hosts = list(dict.fromkeys(cut.hosts))
    # the report is kept with the wait: an agent restarted meanwhile goes on with it (held_gangs)
    _wait(agent, group, hosts, f"{cut}; the gang restarts when it answers again", since, report=report)
    members = [m for m in gang["members"] if m["host"] in hosts]
    while True:
        time.sleep(MEMBER_POLL)
        if not _still_waiting(agent, group):
            log(f"gang {group}: no longer waiting for {', '.join(hosts)} (stopped or started by the operator)")
            return False
        if all(_answers(agent, m) for m in members):
            break
    _end_wait(agent, group)
    log(f"gang {group}: {', '.join(hosts)} answer again after {time.time() - since:.0f} s; restarting it")
    return True


def _answers(agent: AgentApi, member: dict) -> bool:
    try:
        agent.send(member, {"op": "ping"}, timeout=MEMBER_POLL)
    except OSError:
        return False
    except RuntimeError:
        pass  # it answered (an error, say an agent without `ping`): it is reachable
    return True
