"""The per-host agent: watches this host's supervisord and restarts gangs, after the CLI is gone.

One agent per host and deployment runs under that host's supervisord (autorestart) as an
event listener: supervisord wakes it on every process state change, and it then reads the
process table over the unix socket. When a program of a gang that should run has exited, it
reports to the gang's leader (the agent on the instance's first host; for a service, the
agent on that host), over TCP with an HMAC on every message (key: ROOT/state/secret, 0600,
the same on all hosts of the deployment). The leader, within the restart budget (restart_max
in restart_window; the first at once, then backing off: restart_policy.py), stops the gang on
every member host and then starts it on all of them at once. Past the budget it stops the gang
and records FAILED with the exit code and the last log lines; `launcher status` shows it.

State on disk (ROOT/state/): desired.json (groups that should run, kept by the host actions
start / stop and by the agent), gang.json (the leader's record per gang).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from .messages import Verifier, send_signed
from .listener import listen
from .members import DEAD, Unreachable, forget_reporting, log, log_to_file, report_to_leader
from .followers import follow, gang_state
from .gangstart import start_gangs
from .leftovers import stop_logged
from .restart import handle_failure, resume_intents
from .snapshot import current_state, write_snapshot
from .state import (current_generation, desired, read_json, read_manifest, set_desired, state_lock, state_path,
                    tail, update_state, write_json)
from .supervisor_rpc import STOP_RPC_TIMEOUT, rpc
from .supervisord import recover as recover_supervisord, reload_groups
from .switchback import switch_back
from .agentport import serve as serve_agent_port
from .metrics_http import serve as serve_metrics
from .program_stats import observe

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Callable, TypeVar
    T = TypeVar("T")
    R = TypeVar("R")

STOP_TIMEOUT = STOP_RPC_TIMEOUT  # > supervisord's stopwaitsecs (30 s) plus the SIGKILL
SEND_TIMEOUT = 120.0  # a member's stop may take STOP_TIMEOUT
CONNECT_TIMEOUT = 10.0
LOG_LINES = 10
EACH_AT_ONCE = 128  # a stop or start of every member at once, up to this many members


class Agent:
    def __init__(self, root: str):
        self.root = root
        self.locks: dict[str, threading.Lock] = {}
        self.reported: dict[str, str] = {}
        self.pending: dict[str, dict] = {}  # a report that came in while its gang was being restarted
        self.verifier = Verifier(root)  # its replay cache on disk too: a restarted agent refuses replays
        self._busy_lock = threading.Lock()
        self.desire = threading.Lock()  # desired.json and this agent's starts and stops, against its poll
        self.busy = 0  # gang work under way (a report, a restart): state/agent-busy while > 0

    def task(self, fn: Callable[..., object], *args: object) -> None:
        """Gang work (a report, a restart, a wait), each in a thread of its own: it may wait for
        long (a member, a dependency) and on leaf calls (each). Its exception is logged; counted
        in state/agent-busy while it runs."""
        with self._busy_lock:
            self.busy += 1
            write_json(state_path(self.root, "agent-busy"), self.busy)

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # logged: never lost with its thread
                log(f"{getattr(fn, '__name__', fn)}: {type(exc).__name__}: {exc}")
            finally:
                with self._busy_lock:
                    self.busy -= 1
                    write_json(state_path(self.root, "agent-busy"), self.busy)
        threading.Thread(target=run, daemon=True).start()

    def each(self, fn: Callable[[T], R], items: list[T]) -> list[R | BaseException]:
        """``fn`` on every item at once (leaf calls, which wait on nothing else here), at most
        EACH_AT_ONCE running; each one's result or exception, in order: the caller sees every
        exception. Plain threads, not a pool: concurrent.futures pulls in logging, whose import
        would sit on a gang start's path (the leader's first start of its members)."""
        out: list[R | BaseException] = []
        slots = threading.BoundedSemaphore(EACH_AT_ONCE)

        def run(i: int, item: T) -> None:
            try:
                out[i] = fn(item)
            except BaseException as exc:  # handed to the caller, as a pool's future would
                out[i] = exc
            finally:
                slots.release()
        out.extend(RuntimeError("not run") for _ in items)  # every slot is overwritten by its thread
        threads = []
        for i, item in enumerate(items):
            slots.acquire()
            threads.append(threading.Thread(target=run, args=(i, item), daemon=True, name="agent-each"))
            threads[-1].start()
        for t in threads:
            t.join()
        return out

    # configuration of the running generation
    def conf(self) -> dict:
        return read_json(os.path.join(self.root, "current", "gang.json"), {"gangs": {}})

    def send(self, peer: dict, body: dict, timeout: float = SEND_TIMEOUT) -> dict:
        """``body`` to the agent of ``peer`` ({host, address}), signed for that host; its verified reply."""
        return send_signed(self.root, peer["address"], self.conf()["agent_port"], body, timeout, CONNECT_TIMEOUT,
                           to=peer["host"])

    # --- local supervisord ---------------------------------------------------------------
    def local_stop(self, group: str) -> dict:
        with self.desire:
            set_desired(self.root, group, False)
        rpc(self.root, STOP_TIMEOUT).supervisor.stopProcessGroup(group, True)  # > stopwaitsecs (30 s) + SIGKILL
        stop_logged(self.root, [group], None, log)  # what left the group or outlived it (proctree.py)
        return {"ok": True}

    def local_start(self, group: str, snapshot: bool = True) -> dict:
        """Start ``group`` here; ``snapshot=False``: the caller writes the snapshot (a leader, once
        it has asked its members to start: their start need not wait for it)."""
        # the current generation's config, as a deliberate start loads it: every member of a restarted gang
        # runs its host's current generation (_restart holds a gang whose members' generations differ)
        server = rpc(self.root)
        reload_groups(server, [group])
        stop_logged(self.root, [group], None, log)  # never a start against a port its leftovers hold
        update_state(self.root, "started.json", {group: self.started_from(group)})
        with self.desire, state_lock(self.root):  # wanted and started at once: never wanted while still stopped
            set_desired(self.root, group, True)
            started_at = time.time()
            server.supervisor.startProcessGroup(group, False)
        if snapshot:  # now: the agent's own event wakes start only once it is RUNNING (1 s)
            write_snapshot(self.root)
        return {"ok": True, "started_at": started_at}

    def started_from(self, group: str) -> dict:
        """This host's current generation and the group's config hash in it (state/started.json's form)."""
        hashes = {p["owner"]: p["owner_hash"] for p in (read_manifest(self.root) or {}).get("programs", [])}
        return {"generation": current_generation(self.root), "owner_hash": hashes.get(group)}

    # --- leader ------------------------------------------------------------------------------
    def on_member(self, member: dict, op: str) -> dict:
        conf, (verb, group) = self.conf(), op.split(":", 1)
        if member["host"] == conf["host"]:
            return self.local_stop(group) if verb == "stop" else self.local_start(group)
        where = f"member {member['host']} ({member['address']})"
        try:
            return self.send(member, {"op": verb, "group": group})
        except OSError as exc:  # no answer at all: a partition or a host down, not a refusal
            raise Unreachable([member["host"]], f"{where} unreachable: {exc}") from None
        except RuntimeError as exc:
            raise RuntimeError(f"{where}: {exc}") from None

    def all_members(self, gang: dict, op: str) -> list[dict]:
        """``op`` on every member at once; Unreachable naming every member that did not answer."""
        replies, cut, errors = [], [], []
        for outcome in self.each(lambda m: self.on_member(m, op), gang["members"]):
            if isinstance(outcome, Unreachable):
                cut.append(outcome)
            elif isinstance(outcome, BaseException):
                errors.append(outcome)
            else:
                replies.append(outcome)
        if cut:
            raise Unreachable([h for e in cut for h in e.hosts], "; ".join(map(str, cut)))
        if errors:
            raise errors[0]
        return replies

    def handle_failure(self, group: str, report: dict) -> None:
        handle_failure(self, group, report)

    # --- watching ------------------------------------------------------------------------------
    def poll_once(self, programs: list[dict], want: dict[str, bool]) -> None:
        """Report each program of a gang that should run (``want``) and has exited (once per run of it)."""
        conf, reports = self.conf(), []
        for info in programs:
            group, incident = info["group"], f"{info['name']}@{info['start']}"
            if (group not in conf["gangs"] or not want.get(group) or info["state"] not in DEAD
                    or self.reported.get(group) == incident):
                continue
            self.reported[group] = incident
            report = {"host": conf["host"], "program": info["name"], "state": info["state"],
                      "exitstatus": info["exitstatus"], "start": info["start"], "seen": time.time(),
                      "generation": current_generation(self.root),
                      "log": tail(os.path.join(self.root, "logs", f"{info['name']}.log"), LOG_LINES)}
            reports.append((group, report))
        if reports:  # what they left goes first (workers, ports, device memory), off the event loop
            def report_all() -> None:
                for g, r in reports:
                    self.task(self.report_failure, g, conf["gangs"][g], r)
            self.task(stop_logged, self.root, None, [r["program"] for _, r in reports], log, report_all)

    def poll_and_snapshot(self) -> None:
        # what runs and what should, read together: local_start/local_stop (this lock) and the host
        # actions' starts (the state flock) mark a group wanted and start it as one step
        with self.desire, state_lock(self.root):
            state = current_state(self.root)  # one getAllProcessInfo serves the poll and the snapshot
            want = desired(self.root)
        self.poll_once(state["programs"], want)
        observe(self.root, state["programs"])  # restarts and last exits, for /metrics
        write_snapshot(self.root, state)

    def report_failure(self, group: str, gang: dict, report: dict) -> None:
        if gang["leader"] == self.conf()["host"]:
            self.handle_failure(group, report)
        else:
            report_to_leader(self, group, gang, report)

    def serve(self) -> None:
        serve_agent_port(self)

    def dispatch(self, body: dict) -> dict:
        op, group = body.get("op"), body.get("group", "")
        if op == "failed":
            self.task(handle_failure, self, group, body["report"])
            return {"ok": True}
        if op == "stop":
            return self.local_stop(group)
        if op == "start":
            return self.local_start(group)
        if op == "gang-start":  # `up`'s first start of gangs this agent leads, all members at once
            return start_gangs(self, [str(g) for g in body.get("groups") or []])
        if op == "follow":  # restart_with: what this gang follows was restarted and is ready again
            self.task(follow, self, group, body)
            return {"ok": True}
        if op == "gang-state":
            return gang_state(self.root, group)
        if op == "generation":
            return {"ok": True, **self.started_from(group)}
        if op == "switch-back":  # `up` rolls back a switch here and cannot reach this host over SSH
            return switch_back(self.root, body)
        if op == "ping":
            return {"ok": True, "time": time.time()}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def run(self) -> None:
        """supervisord event listener: woken by process state changes (and a 60 s tick as a
        safety net), so an idle host costs nothing and a dead rank is seen at once."""
        log_file = os.path.join(self.root, "logs", "launcher-agent.log")
        log_to_file(log_file)  # once supervisord's pipe for the log breaks
        # no terminal to hang up: a SIGHUP comes only when supervisord dies while the agent is stopped
        # (its orphaned process group gets SIGHUP + SIGCONT), and the agent is what must then recover
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        threading.Thread(target=self.serve, daemon=True).start()
        threading.Thread(target=serve_metrics, args=(self,), daemon=True).start()
        write_json(state_path(self.root, "agent-busy"), 0)  # what a previous agent was doing died with it
        write_json(state_path(self.root, "agent.pid"), os.getpid())
        log(f"watching {self.root}")
        forget_reporting(self.root)
        resume_intents(self)  # the waits and restarts the previous agent left: go on with them
        how = listen(sys.stdin.buffer, sys.stdout.buffer, self.on_event)
        # supervisord went away: if it died, bring it back (and stop what it left). Its pipes first:
        # what is left unwritten in them would fail every flush (the fork that starts supervisord)
        detach(log_file)
        try:
            log(f"supervisord went away ({how}); {recover_supervisord(self.root)}")
        except Exception as exc:
            log(f"supervisord went away ({how}) and could not be started again: {exc}")
        # now, whatever threads are at (a wait, a restart: its intent is on disk for the next
        # agent): a lingering one would hold the agent port from the agent the new supervisord starts
        sys.stderr.flush()
        os._exit(0)

    def on_event(self, fields: dict[bytes, bytes], payload: bytes) -> None:
        if fields.get(b"eventname") == b"REMOTE_COMMUNICATION":  # a host action's wake (restore)
            what = payload.partition(b"\n")[2].decode("utf-8", "replace")  # the event's data ...
            if what[:2] == "b'" and what[-1:] == "'":  # ... which supervisor 4 on Python 3 sends as b'...'
                what = what[2:-1]
            log(f"woken to look now: {what}")
        try:
            self.poll_and_snapshot()
        except Exception as exc:  # a bad poll must not end supervision
            log(f"poll failed: {exc}")


def detach(log_file: str) -> None:
    """stdout (the event protocol) to /dev/null and stderr to the log file, as fds (what this
    process starts inherits them) and as sys.stdout / sys.stderr (dropping what they buffered)."""
    for fd, path, flags in ((1, os.devnull, os.O_WRONLY), (2, log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)):
        new = os.open(path, flags, 0o644)
        os.dup2(new, fd)
        os.close(new)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m launcher.host.agent ROOT", file=sys.stderr)
        return 2
    Agent(argv[0]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
