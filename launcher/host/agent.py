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
import sys
import threading
import time

from .messages import Verifier, send_signed
from .members import (DEAD, Unreachable, failure_cause, forget_reporting, held_gangs, log, report_to_leader,
                      seen_before_restart, wait_for_members)
from .followers import follow, gang_state, tell_followers, wait_for_leaders
from .gangstart import start_gangs, start_leader_first
from .leftovers import stop_logged
from .restart_policy import restart_backoff, restart_when
from .snapshot import current_state, write_snapshot
from .state import (current_generation, desired, read_json, read_manifest, secret, set_desired, state_path, tail,
                    update_state, write_json)
from .supervisor_rpc import STOP_RPC_TIMEOUT, rpc
from .supervisord import recover as recover_supervisord, reload_groups
from .switchback import switch_back
from .agentport import serve as serve_agent_port
from .metrics import counted, restart_cause
from .metrics_http import serve as serve_metrics
from .program_stats import observe

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor
    from typing import Callable

STOP_TIMEOUT = STOP_RPC_TIMEOUT  # > supervisord's stopwaitsecs (30 s) plus the SIGKILL
SEND_TIMEOUT = 120.0  # a member's stop may take STOP_TIMEOUT
ATTEMPTS = 3          # a restart a member refused (it answered with an error) is tried again, then FAILED
CONNECT_TIMEOUT = 10.0
LOG_LINES = 10
EX_CONFIG = 78  # sysexits.h; the launch script exits so when it cannot apply the topology's limits

UNKNOWN_GENERATION = "?"  # a member whose agent predates the `generation` op


class Agent:
    def __init__(self, root: str):
        self.root = root
        self.locks: dict[str, threading.Lock] = {}
        self.reported: dict[str, str] = {}
        self.pending: dict[str, dict] = {}  # a report that came in while its gang was being restarted
        self.verifier = Verifier()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.busy = 0  # gang work under way (a report, a restart): state/agent-busy while > 0

    def task(self, fn: Callable[..., object], *args: object) -> None:
        """Gang work on the pool, counted in state/agent-busy while it runs (0: nothing under way)."""
        with self._pool_lock:
            self.busy += 1
            write_json(state_path(self.root, "agent-busy"), self.busy)

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # logged: never lost with its future
                log(f"{getattr(fn, '__name__', fn)}: {type(exc).__name__}: {exc}")
            finally:
                with self._pool_lock:
                    self.busy -= 1
                    write_json(state_path(self.root, "agent-busy"), self.busy)
        self.pool.submit(run)

    @property
    def pool(self) -> ThreadPoolExecutor:
        # made on first use (a failure to handle): concurrent.futures pulls in logging, which
        # would cost every agent's start a third of its import time
        with self._pool_lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor
                self._pool = ThreadPoolExecutor(max_workers=128)  # a stop or start of every member at once
            return self._pool

    # configuration of the running generation
    def conf(self) -> dict:
        return read_json(os.path.join(self.root, "current", "gang.json"), {"gangs": {}})

    def send(self, address: str, body: dict, timeout: float = SEND_TIMEOUT) -> dict:
        return send_signed(self.root, address, self.conf()["agent_port"], body, timeout, CONNECT_TIMEOUT)

    # --- local supervisord ---------------------------------------------------------------
    def local_stop(self, group: str) -> dict:
        set_desired(self.root, group, False)
        rpc(self.root, STOP_TIMEOUT).supervisor.stopProcessGroup(group, True)  # > stopwaitsecs (30 s) + SIGKILL
        stop_logged(self.root, [group], None, log)  # what left the group or outlived it (proctree.py)
        return {"ok": True}

    def local_start(self, group: str) -> dict:
        # the current generation's config, as a deliberate start loads it: every member of a restarted gang
        # runs its host's current generation (_restart holds a gang whose members' generations differ)
        server = rpc(self.root)
        reload_groups(server, [group])
        stop_logged(self.root, [group], None, log)  # never a start against a port its leftovers hold
        set_desired(self.root, group, True)  # only now: a poll meanwhile must not take it for dead
        update_state(self.root, "started.json", {group: self.started_from(group)})
        started_at = time.time()
        server.supervisor.startProcessGroup(group, False)
        write_snapshot(self.root)  # now: the agent's own event wakes start only once it is RUNNING (1 s)
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
            return self.send(member["address"], {"op": verb, "group": group})
        except OSError as exc:  # no answer at all: a partition or a host down, not a refusal
            raise Unreachable([member["host"]], f"{where} unreachable: {exc}") from None
        except RuntimeError as exc:
            raise RuntimeError(f"{where}: {exc}") from None

    def all_members(self, gang: dict, op: str) -> list[dict]:
        """``op`` on every member at once; Unreachable naming every member that did not answer."""
        futures = [self.pool.submit(self.on_member, m, op) for m in gang["members"]]
        replies, cut, errors = [], [], []
        for f in futures:
            try:
                replies.append(f.result())
            except Unreachable as exc:
                cut.append(exc)
            except Exception as exc:
                errors.append(exc)
        if cut:
            raise Unreachable([h for e in cut for h in e.hosts], "; ".join(map(str, cut)))
        if errors:
            raise errors[0]
        return replies

    def handle_failure(self, group: str, report: dict) -> None:
        conf = self.conf()
        gang = conf["gangs"].get(group)
        if gang is None:
            return
        lock = self.locks.setdefault(group, threading.Lock())
        if not lock.acquire(blocking=False):
            # a restart of this gang is under way: look at this report when it is done (a rank that
            # dies right after the restart must not be lost; one of the replaced run is dropped then)
            self.pending[group] = report
            return
        try:
            why = seen_before_restart(report, read_json(state_path(self.root, "gang.json"), {}).get(group))
            if why:
                log(f"gang {group}: dropped the report of {report.get('program')} on {report.get('host')}: {why}")
                return
            attempt = 0
            while attempt < ATTEMPTS:
                try:
                    self._restart(group, gang, report, conf)
                    return
                except Unreachable as exc:  # wait for it: no restart budget or attempt spent on a partition
                    log(f"gang {group}: cannot restart it: {exc}")
                    if not wait_for_members(self, group, gang, exc, report):
                        return
                except Exception as exc:  # a member that refused: try the whole gang again
                    attempt += 1
                    log(f"gang {group}: restart attempt {attempt} failed: {exc}")
                    error = exc
            reason = f"restart failed {ATTEMPTS} times: {error}"
            self._record_failed(group, reason, report)
            log(f"gang {group}: FAILED: {reason}")
            try:
                self.all_members(gang, f"stop:{group}")
            except Exception as exc:
                log(f"gang {group}: could not stop it everywhere: {exc}")
        finally:
            if group in held_gangs(self.root):  # resumed after an agent restart, and done with
                update_state(self.root, "waiting.json", {group: None})
                write_snapshot(self.root)
            lock.release()
            if (pending := self.pending.pop(group, None)) is not None:
                self.task(self.handle_failure, group, pending)

    def _record_failed(self, group: str, reason: str, report: dict) -> None:
        """The gang's FAILED record in state/gang.json (why, and the failed rank's last log
        lines), kept until a deliberate start; `status` shows it from the snapshot."""
        path = state_path(self.root, "gang.json")
        states = read_json(path, {})
        st = states.get(group, {"restarts": 0, "history": []})
        st.update(state="FAILED", reason=reason, last_log=report.get("log", []), failed_at=time.time())
        states[group] = st
        write_json(path, states)
        write_snapshot(self.root)

    def _restart(self, group: str, gang: dict, report: dict, conf: dict) -> None:
        path = state_path(self.root, "gang.json")
        states = read_json(path, {})
        st = states.get(group, {"state": "RUNNING", "restarts": 0, "history": []})
        if st["state"] == "FAILED":
            return
        now = time.time()
        history = [t for t in st.get("history", []) if now - t < conf["restart_window"]]
        code, cause = report.get("exitstatus"), failure_cause(report)
        if code == EX_CONFIG:  # e.g. a limit the login cannot grant: the same again next time
            log(f"gang {group}: {cause}: a configuration error a restart cannot fix: FAILED, stopping it")
            self._record_failed(group, f"{cause}: a configuration error (exit {EX_CONFIG}), not restarted", report)
            self.all_members(gang, f"stop:{group}")
            return
        if len(history) >= conf["restart_max"]:
            log(f"gang {group}: {cause}; restart budget ({conf['restart_max']} in "
                f"{conf['restart_window']:.0f} s) spent: FAILED, stopping it on all hosts")
            self._record_failed(group, cause, report)
            self.all_members(gang, f"stop:{group}")
            return
        if self._generations_differ(group, gang, cause):
            return
        backoff = restart_backoff(len(history))
        st.update(state="RESTARTING", reason=cause, last_log=report.get("log", []), backoff=backoff)
        states[group] = st
        write_json(path, states)
        log(f"gang {group}: {cause}; stopping it on {len(gang['members'])} hosts, " + restart_when(backoff))
        self.all_members(gang, f"stop:{group}")
        if backoff:
            time.sleep(backoff)
        runs = wait_for_leaders(self, group, gang)  # what it depends on ready; what it follows not restarting
        if runs is None:
            return
        started = start_leader_first(self, gang, group)
        history.append(time.time())
        st.update(state="RUNNING", restarts=st.get("restarts", 0) + 1, causes=counted(st, restart_cause(report)),
                  history=history, last_restart=time.time(), skew=max(started.values()) - min(started.values()),
                  started=started, followed={**st.get("followed", {}), **runs})
        states = read_json(path, {})
        states[group] = st
        write_json(path, states)
        write_snapshot(self.root)
        log(f"gang {group}: restarted on all hosts (restart {st['restarts']}, start skew "
            f"{st['skew'] * 1000:.0f} ms)")
        if gang.get("followers"):  # restart_with: they restart once this run passes its probes
            self.task(tell_followers, self, group, gang, st["last_restart"])

    def _generations_differ(self, group: str, gang: dict, cause: str) -> bool:
        """Hold a gang whose members are on different generations (a failed `up` that could not
        put every host back): restarted, it would be one HCCL world of two configs. The hold is
        recorded as a wait (`status` shows why) until a deliberate start (`up`) ends it."""
        host = self.conf()["host"]

        def generation(m: dict) -> str | None:
            if m["host"] == host:
                return self.started_from(group)["generation"]
            try:
                return self.send(m["address"], {"op": "generation", "group": group})["generation"]
            except OSError as exc:  # no answer: the gang waits for the host (handle_failure), not a refusal
                raise Unreachable([m["host"]], f"member {m['host']} ({m['address']}) unreachable: {exc}") from None
            except RuntimeError as exc:
                if "unknown op" in str(exc):  # an older agent, until the switch restarts it: not known
                    return UNKNOWN_GENERATION
                raise
        asked = {m["host"]: self.pool.submit(generation, m) for m in gang["members"]}
        gens = {h: f.result() for h, f in asked.items()}
        if len(set(gens.values()) - {UNKNOWN_GENERATION}) < 2:
            return False
        on = ", ".join(f"{h} on {g or 'nothing'}" for h, g in sorted(gens.items()))
        reason = f"not restarted: its hosts are on different generations ({on}); `launcher up` makes them agree"
        log(f"gang {group}: {cause}; {reason}")
        update_state(self.root, "waiting.json", {group: {"on": ["hosts on different generations"],
                                                         "reason": reason, "since": time.time()}})
        write_snapshot(self.root)
        return True

    # --- watching ------------------------------------------------------------------------------
    def poll_once(self, programs: list[dict]) -> None:
        """Report each program of a gang that should run and has exited (once per run of it)."""
        conf, want, reports = self.conf(), desired(self.root), []
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
        state = current_state(self.root)  # one getAllProcessInfo serves the poll and the snapshot
        self.poll_once(state["programs"])
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
            self.task(self.handle_failure, group, body["report"])
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
        threading.Thread(target=self.serve, daemon=True).start()
        threading.Thread(target=serve_metrics, args=(self,), daemon=True).start()
        write_json(state_path(self.root, "agent-busy"), 0)  # what a previous agent was doing died with it
        write_json(state_path(self.root, "agent.pid"), os.getpid())
        log(f"watching {self.root}")
        forget_reporting(self.root)
        for group, report in held_gangs(self.root).items():  # a wait the previous agent left: go on with it
            log(f"gang {group}: resuming the wait for its members")
            self.task(self.handle_failure, group, report)
        stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
        while True:
            stdout.write(b"READY\n")
            stdout.flush()
            header = stdin.readline()
            if not header:  # supervisord went away: if it died, bring it back (and stop what it left)
                try:  # its pipe to our log went with it: write the log file ourselves
                    sys.stderr = open(os.path.join(self.root, "logs", "launcher-agent.log"), "a", encoding="utf-8")
                    if (done := recover_supervisord(self.root)) is not None:
                        log(done)
                except Exception as exc:
                    log(f"supervisord is gone and could not be started again: {exc}")
                return
            fields = dict(tok.split(b":", 1) for tok in header.split() if b":" in tok)
            payload = stdin.read(int(fields.get(b"len", b"0")))
            if fields.get(b"eventname") == b"REMOTE_COMMUNICATION":  # a host action's wake (restore)
                what = payload.partition(b"\n")[2].decode("utf-8", "replace")  # the event's data ...
                if what[:2] == "b'" and what[-1:] == "'":  # ... which supervisor 4 on Python 3 sends as b'...'
                    what = what[2:-1]
                log(f"woken to look now: {what}")
            try:
                self.poll_and_snapshot()
            except Exception as exc:  # a bad poll must not end supervision
                log(f"poll failed: {exc}")
            stdout.write(b"RESULT 2\nOK")
            stdout.flush()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m launcher.host.agent ROOT", file=sys.stderr)
        return 2
    Agent(argv[0]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
