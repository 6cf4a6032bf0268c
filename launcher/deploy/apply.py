"""The imperative shell: put a Plan on its hosts and run it (up, down, status, restart, logs).

`up` in phases, each across all hosts in parallel, and a failure in a phase stops before
the next one, so a failed `up` leaves every host on its previous generation:
  1. state    reach every host; learn its generation and what runs
  2. prepare  ship the runtime (first time) and the new generation, without touching anything
  3. switch   atomically point `current` at the new generation; supervisord rereads
              (a host that fails here is rolled back with the others)
  4. start    level by level (depends_on), start each instance that changed or is not
              running, on all of its hosts at once (a gang), and report the start skew
"""
from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core import preflight
from ..core.errors import LauncherError
from ..core.graph import relink_after
from .interrupt import NEVER, Interrupt, Interrupted
from ..core.plan import Plan
from .remote import HostClient
from .runtime import build_runtime, payload
from .transport import DEFAULT_FORKS, HostsFailed, SshOptions, fan_out, transport_for

Progress = Callable[[str], None]
STATE_TIMEOUT = 30.0  # reading a host's state is quick; a host that does not answer is down
READY_TIMEOUT = 120.0  # how long what others depend on may take to pass its probe
ALIVE = {"STARTING", "RUNNING", "BACKOFF"}


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Session:
    """Clients for every host of a plan; closed at the end of a command."""

    plan: Plan
    forks: int = DEFAULT_FORKS
    ssh: SshOptions = field(default_factory=SshOptions)
    progress: Progress = stderr_progress
    interrupt: Interrupt = NEVER  # Ctrl-C: long operations stop at their next safe point

    def __post_init__(self) -> None:
        runtime = build_runtime()
        self.clients = {hp.host.name: HostClient(transport_for(hp.host, self.ssh), hp.root, runtime)
                        for hp in self.plan.hosts}

    def close(self) -> None:
        for c in self.clients.values():
            c.transport.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_runtimes(self, hosts: list[str] | None = None) -> None:
        """Ship the host-side code where it is missing (check and discover need it before any up)."""
        self.each("installing the launcher runtime", lambda c: c.ensure_runtime(c.state()), hosts)

    def each(self, what: str, fn: Callable[[HostClient], Any], hosts: list[str] | None = None) -> dict[str, Any]:
        names = hosts if hosts is not None else list(self.clients)
        results, failures = fan_out([self.clients[n] for n in names], fn, key=lambda c: c.name, forks=self.forks)
        if failures:
            raise HostsFailed(failures, what)
        return results


@dataclass(frozen=True)
class UpReport:
    generation: str
    previous: dict[str, str | None]
    started: list[str]
    unchanged: list[str]
    skew: dict[str, float]
    seconds: float
    refused: dict[str, list[str]] = field(default_factory=dict)  # instance -> preflight failures


def run_preflight(session: Session, instances: list[str] | None = None) -> tuple[list, dict, dict[str, list[str]]]:
    """Run the link checker for the instances on their hosts, in parallel; failures per instance."""
    checks = preflight.checks_for(session.plan, instances)
    results, failures = fan_out(
        checks, lambda chk: session.clients[chk.host].call("linkcheck", *chk.tool_args,
                                                           stdin=json.dumps(chk.spec).encode(), timeout=300),
        key=lambda chk: chk.key, forks=session.forks)
    replies: dict[str, dict] = {}
    bad: dict[str, list[str]] = {}
    for chk in checks:
        k = chk.key
        if k in failures:
            reply = {"report": None, "stderr": str(failures[k]), "exit": None}
        else:
            reply = results[k]
        replies[k] = reply
        lines = preflight.failure_lines(chk, reply)
        if lines:
            bad.setdefault(chk.instance, []).extend(lines)
    return checks, replies, bad


def owners_on(plan: Plan) -> dict[str, list[str]]:
    """owner (instance or service) -> hosts it has programs on, in plan order."""
    out: dict[str, list[str]] = {}
    for hp in plan.hosts:
        for p in hp.programs:
            hosts = out.setdefault(p.owner, [])
            if hp.host.name not in hosts:
                hosts.append(hp.host.name)
    return out


def _owner_hashes(manifest: dict | None) -> dict[str, str]:
    return {p["owner"]: p["owner_hash"] for p in (manifest or {}).get("programs", [])}


def _needs_start(owner: str, hosts: list[str], old: dict[str, dict], new_hashes: dict[str, dict[str, str]]) -> bool:
    """An owner (re)starts if its files changed on any host or any of its programs is not alive."""
    for h in hosts:
        state = old[h]
        if _owner_hashes(state.get("manifest")).get(owner) != new_hashes[h].get(owner):
            return True
        started = (state.get("started") or {}).get(owner) or {}
        if started.get("owner_hash") not in (None, new_hashes[h].get(owner)):
            return True  # still runs an older config (an interrupted or stopped roll)
        progs = [p for p in state.get("programs", []) if p["group"] == owner]
        if not progs or any(p["state"] not in ALIVE for p in progs):
            return True
    return False


def up(session: Session, files: dict[str, dict], generation: str, skip_preflight: bool = False,
       ready_timeout: float = READY_TIMEOUT, strategy: str = "auto", max_unavailable: int = 1) -> UpReport:
    t0 = time.monotonic()
    plan = session.plan

    def say(msg: str) -> None:  # progress with the time since the start, for people and profiles
        session.progress(f"{msg}  [{time.monotonic() - t0:.1f} s]" if msg.startswith("  ") else msg)
    preflight_flag = skip_preflight
    skip_preflight = skip_preflight or not plan.preflight
    say(f"up {plan.deployment}: generation {generation} on {len(plan.hosts)} hosts")
    old = session.each("reaching hosts", lambda c: c.state(timeout=STATE_TIMEOUT))
    say(f"  [1/4] reached {len(old)} hosts")
    previous = {h: s.get("generation") for h, s in old.items()}

    # 2. one upload per host that needs anything: runtime (first time), generation, agent key
    key, key_hosts, force_key = plan_secret(session, old)
    needs = {h for h, s in old.items() if s.get("runtime_missing") or s.get("generation") != generation
             or h in key_hosts}

    # A blank host (no generation, no supervisord) has nothing to protect: its upload call also
    # switches it (starting supervisord), and starts the first-level owners that live only on
    # blank hosts and need no link check: one round trip and one Python start less per host.
    # If any host fails before the switch phase is done, the blank ones are undone (`switch -`).
    blank = {h for h, s in old.items() if not s.get("generation") and not s.get("supervisord")} & needs
    checked = set() if skip_preflight else {i.name for i in plan.instances}
    owners = owners_on(plan)
    early = [o for o in (plan.levels[0] if plan.levels else [])
             if o in owners and o not in checked and set(owners[o]) <= blank]

    def prepare(c: HostClient) -> dict:
        st = old[c.name]
        data = payload(build_runtime() if st.get("runtime_missing") else None,
                       files[c.name] if st.get("generation") != generation else None,
                       key if c.name in key_hosts else None)
        extra = ("--force-secret",) if force_key else ()
        if c.name in blank:
            groups = [o for o in early if c.name in owners[o]]
            extra += (f"--switch={build_runtime().id}", *((f"--start={','.join(groups)}",) if groups else ()))
        return c.call("prepare", generation, *extra, stdin=data)

    uploaded, failures = fan_out([session.clients[h] for h in sorted(needs)], prepare, key=lambda c: c.name,
                                 forks=session.forks)
    if failures:
        if blank:
            undo_blank(session, blank, say)
            say("  upload failed; the blank hosts it had switched were put back to nothing")
        raise HostsFailed(failures, "upload")
    early_at = {h: r["switched"]["started"]["started_at"] for h, r in uploaded.items()
                if r.get("switched", {}).get("started")}
    say(f"  [2/4] uploaded generation {generation} to {len(needs)} hosts" if needs else
        f"  [2/4] every host already has generation {generation}")
    new_hashes = {h: _owner_hashes(_manifest_of(files[h])) for h in files}
    to_start = [o for o, hosts in owners.items() if _needs_start(o, hosts, old, new_hashes)]
    to_start += relink_after(plan.links, to_start)  # LLM-DataDist: decoders relink to restarted prompts
    refused: dict[str, list[str]] = {}
    instances = [i.name for i in plan.instances if i.name in to_start]
    if instances and skip_preflight:
        say(f"  PREFLIGHT SKIPPED: HCCL links of {', '.join(instances)} were NOT checked "
            f"({'--skip-preflight' if preflight_flag else 'the topology says preflight: false'})")
    elif instances:
        _, _, refused = run_preflight(session, instances)
        ok = [i for i in instances if i not in refused]
        say(f"  preflight: links up for {', '.join(ok) or 'no instance'}"
            + (f"; REFUSED {', '.join(refused)}" if refused else ""))
        to_start = [o for o in to_start if o not in refused]

    try:
        session.interrupt.check("nothing was switched: every host is still on its previous generation")
    except Interrupted:
        undo_blank(session, blank, say)
        raise
    # 3. switch; owners of the first level that run nowhere yet start in the same call
    first = set(plan.levels[0]) if plan.levels else set()
    fresh = [o for o in to_start if o in first and not _alive_anywhere(o, owners[o], old)]
    skew: dict[str, float] = {}
    # a host given this launcher's runtime switches to it too (its agent then runs the new code)
    settled = all(s.get("generation") == generation and s.get("supervisord") and not s.get("runtime_missing")
                  for s in old.values())
    if not settled:
        started_at = switch_all(session, generation, previous,
                                {h: [o for o in fresh if h in owners[o] and o not in early] for h in session.clients},
                                switched=blank)
        started_at.update(early_at)
        say(f"  [3/4] switched {len(files)} hosts to {generation}")
        for o in fresh:
            times = [started_at[h] for h in owners[o] if h in started_at]
            skew[o] = max(times) - min(times) if times else 0.0
        if fresh:
            say(f"  [4/4] started {', '.join(f'{o} (skew {skew[o] * 1000:.0f} ms)' for o in fresh)}")
    else:
        fresh = []
    # 4. the rest level by level, each owner once what it depends on passes its probe
    session.interrupt.check(f"every host is on generation {generation}; nothing else was restarted")
    removed = {h: sorted(set(_owner_hashes(old[h].get("manifest"))) - set(new_hashes[h])) for h in old}
    if any(removed.values()):
        session.each("remove what the plan no longer has", lambda c: c.call("prune"),
                     [h for h, r in removed.items() if r])
        say(f"  removed {', '.join(sorted({o for r in removed.values() for o in r}))}")
    from .levels import start_levels
    rest = [o for o in to_start if o not in fresh]
    progress = start_levels(session, rest, owners, old, generation=generation, strategy=strategy,
                            max_unavailable=max_unavailable, ready_timeout=ready_timeout,
                            not_ready={o: "refused by the link check" for o in refused}, skew=skew, say=say,
                            started_first=tuple(fresh))
    unchanged = [o for o in owners if o not in to_start and o not in refused]
    if unchanged:
        say(f"  unchanged, left running: {', '.join(unchanged)}")
    for inst, lines in refused.items():
        say(f"  {inst} NOT started: its HCCL links are not healthy:")
        for line in lines:
            say(f"    {line}")
    progress.raise_if_incomplete()
    return UpReport(generation, previous, to_start, unchanged, skew, time.monotonic() - t0, refused)


def _alive_anywhere(owner: str, hosts: list[str], old: dict[str, dict]) -> bool:
    return any(p["group"] == owner and p["state"] in ALIVE for h in hosts for p in old[h].get("programs", []))


def plan_secret(session: Session, states: dict[str, dict]) -> tuple[bytes | None, set[str], bool]:
    """The agent key every host must hold: (key, hosts to send it to, replace an existing one)."""
    ids = {h: s.get("secret_id") for h, s in states.items()}
    have = {i for i in ids.values() if i}
    if len(have) == 1 and all(ids.values()):
        return None, set(), False
    if len(have) == 1:  # a new host joins: it gets the key the others already share
        holder = next(h for h, i in ids.items() if i)
        key = session.clients[holder].call("secret", "--reveal")["secret"].encode()
        return key, {h for h, i in ids.items() if not i}, False
    # none yet, or hosts disagree: one new key for all
    return secrets.token_hex(32).encode(), set(ids), bool(have)


def _manifest_of(host_files: dict) -> dict:
    return json.loads(host_files["manifest.json"].content)


def switch_all(session: Session, generation: str, previous: dict[str, str | None],
               start: dict[str, list[str]] | None = None,
               switched: set[str] | frozenset[str] = frozenset()) -> dict[str, float]:
    """Switch every host (and start ``start[host]`` groups there); ``switched`` hosts are on the
    generation already (blank hosts, switched by their upload): they only start. If any host
    fails, put all of them back on their previous generation. Returns when each host started."""
    runtime = build_runtime().id
    start = start or {}

    def switch(c: HostClient) -> dict:
        if c.name in switched:
            return {"started": c.call("start", *start[c.name])} if start.get(c.name) else {}
        extra = (f"--start={','.join(start[c.name])}",) if start.get(c.name) else ()
        return c.call("switch", generation, runtime, *extra)

    results, failures = fan_out(list(session.clients.values()), switch, key=lambda c: c.name,
                                forks=session.forks)
    if not failures:
        return {h: r["started"]["started_at"] for h, r in results.items() if r.get("started")}
    back = [c for c in session.clients.values() if c.name in results or c.name in failures or c.name in switched]
    fan_out(back, lambda c: c.call("switch", previous.get(c.name) or "-", runtime), key=lambda c: c.name,
            forks=session.forks)
    raise HostsFailed(failures, f"switch to {generation} (the other hosts were put back)")


def undo_blank(session: Session, hosts: set[str], say: Progress) -> None:
    """Put hosts that had nothing deployed back to nothing (`switch -`: no `current`, supervisord
    stopped with all it ran). Best effort, on the way out of a failed `up`: a host where it
    fails is named, since it may still run the new generation."""
    if not hosts:
        return
    _, failed = fan_out([session.clients[h] for h in sorted(hosts)],
                        lambda c: c.call("switch", "-", build_runtime().id), key=lambda c: c.name, forks=session.forks)
    for host, exc in sorted(failed.items()):
        say(f"  {host}: NOT put back to nothing, it may still run what this up started there: {exc}")


def gang_start(session: Session, owner: str, hosts: list[str]) -> float:
    """Stop the owner's programs everywhere, then start them on all hosts at once; returns the skew (s)."""
    session.each(f"stop {owner}", lambda c: c.call("stop", owner), hosts)
    started = session.each(f"start {owner}", lambda c: c.call("start", owner), hosts)
    times = [r["started_at"] for r in started.values()]
    return max(times) - min(times) if times else 0.0


def restart_instance(session: Session, instance: str, ready_timeout: float = READY_TIMEOUT) -> float:
    """Gang-restart one owner; a prompt instance's linked decoders restart after it (relink)."""
    owners = owners_on(session.plan)
    if instance not in owners:
        raise LauncherError(f"no instance or service {instance!r} in this plan")
    skew = gang_start(session, instance, owners[instance])
    relink_decoders(session, [instance], owners, ready_timeout)
    return skew


def relink_decoders(session: Session, restarted: list[str], owners: dict[str, list[str]],
                    ready_timeout: float = READY_TIMEOUT) -> list[str]:
    """LLM-DataDist: once the restarted prompt instances listen again (their readiness probe),
    gang-restart every decoder instance linked to them, so it links again; returns those.

    Raises LauncherError when a prompt does not become ready: its decoders are left as they are."""
    decoders = relink_after(session.plan.links, restarted)
    if not decoders:
        return []
    from .rolling import wait_ready  # rolling imports this module
    prompts = [p for p in restarted if relink_after(session.plan.links, [p])]
    for p in prompts:
        why = wait_ready(session, p, owners[p], ready_timeout)
        if why:
            raise LauncherError(f"{p} was restarted but does not listen ({why}); its decoders "
                                f"{', '.join(decoders)} were not restarted and cannot link to it")
    for d in decoders:
        gang_start(session, d, owners[d])
    session.progress(f"  relinked {', '.join(decoders)}: restarted after {', '.join(prompts)} listened again "
                     "(an LLM-DataDist link does not survive the prompt's restart)")
    return decoders


def down(session: Session, purge: bool) -> dict[str, Any]:
    args = ("--purge",) if purge else ()
    result = session.each("down", lambda c: c.call("down", *args))
    for c in session.clients.values():  # nothing of the deployment lingers, not even a connection
        getattr(c.transport, "disconnect", lambda: None)()
    return result


def status_rows(session: Session, desired: str | None = None) -> list[dict[str, Any]]:
    """One row per program the plan expects, joined with what runs on its host, plus drift:
    a host on another generation than ``desired`` (what the topology renders now), a process
    started from an older config of its owner, programs the plan does not have, unreachable
    hosts, and owners waiting for a dependency (``waiting_on``)."""
    states, failures = fan_out(list(session.clients.values()), lambda c: c.state(timeout=STATE_TIMEOUT),
                               key=lambda c: c.name, forks=session.forks)
    gang_all: dict[str, dict] = {}
    waiting_all: dict[str, dict] = {}
    for st in states.values():  # each gang's record (and the agent's wait) lives on its leader's host
        gang_all.update(st.get("gang", {}))
        waiting_all.update(st.get("waiting", {}))
    rows = []
    for hp in session.plan.hosts:
        name = hp.host.name
        if name in failures:
            why = getattr(failures[name], "detail", failures[name])
            rows.extend(_row(p, name, "UNREACHABLE", drift=[f"unreachable: {why}"]) for p in hp.programs)
            continue
        st = states[name]
        running = {p["name"]: p for p in st.get("programs", [])}
        hashes = _owner_hashes(st.get("manifest"))
        gen = st.get("generation")
        host_drift = [f"host runs generation {gen or 'none'}; the topology renders {desired}"] \
            if desired and gen != desired else []
        for p in hp.programs:
            info = running.get(p.name, {})
            g = gang_all.get(p.owner, {})
            state = info.get("state", "ABSENT" if not st.get("supervisord") else "UNKNOWN")
            waits = waiting_all.get(p.owner)
            if g.get("state") == "FAILED":
                state = "FAILED"
            elif waits and state not in ALIVE:
                state = "WAITING"
            started = st.get("started", {}).get(p.owner) or {}
            drift = list(host_drift)
            stale = state in ALIVE and started.get("owner_hash") not in (None, hashes.get(p.owner))
            if stale:
                drift.append(f"runs the config of generation {started.get('generation')}; "
                             f"generation {gen} changed it (not restarted yet)")
            if waits:
                drift.append(f"waits for {', '.join(waits['on'])}: {waits.get('reason', '')}")
            rows.append({**_row(p, name, state, drift=drift), "pid": info.get("pid"), "uptime": info.get("uptime"),
                         "restarts": g.get("restarts", 0), "generation": gen,
                         "started_generation": started.get("generation"), "stale": stale,
                         "waiting_on": waits["on"] if waits else [],
                         "exitstatus": info.get("exitstatus"), "reason": g.get("reason"),
                         "last_log": g.get("last_log", []) if state == "FAILED" else []})
        planned = {p.name for p in hp.programs}
        for extra in st.get("programs", []):
            if extra["name"] not in planned and extra["group"] != "launcher-agent":
                rows.append({"instance": extra["group"], "host": name, "rank": None, "program": extra["name"],
                             "state": extra["state"], "pid": extra.get("pid"), "uptime": extra.get("uptime"),
                             "restarts": 0, "generation": gen, "in_plan": False,
                             "drift": [f"{extra['name']} is not in the plan ({extra['state']})"], "waiting_on": []})
    for r in rows:
        r["desired_generation"] = desired
    return rows


def _row(p, host: str, state: str, drift: list[str]) -> dict[str, Any]:
    return {"instance": p.owner, "host": host, "rank": p.rank, "program": p.name, "state": state, "pid": None,
            "uptime": None, "restarts": 0, "generation": None, "in_plan": True, "drift": drift, "waiting_on": []}


def tcp_targets(plan: Plan) -> dict[str, list[str]]:
    """host -> ADDR:PORT it must reach: its instances' rendezvous (rank 0) and every service port."""
    out: dict[str, list[str]] = {hp.host.name: [] for hp in plan.hosts}
    for inst in plan.instances:
        for h in inst.hosts:
            if inst.world_size > 1 and inst.ranks and inst.ranks[0].host != h:
                out[h].append(inst.master)
    services = [(hp.host.address, p) for hp in plan.hosts for p in hp.programs if p.kind == "service"]
    for addr, program in services:
        port = _service_port(program)
        if port:
            for h in out:
                out[h].append(f"{addr}:{port}")
    return {h: list(dict.fromkeys(t)) for h, t in out.items() if t}


def _service_port(program) -> int | None:
    """The port its clients connect to, as expand recorded it (core.placement.service_ports)."""
    return next((p.port for p in program.ports if p.client), None)


def tcp_matrix(session: Session) -> dict[str, str]:
    """Host-plane reachability of the ports the plan will use (run after ensure_runtimes)."""
    targets = tcp_targets(session.plan)
    replies = session.each("tcp check", lambda c: c.call("tcpcheck", *targets[c.name]), list(targets))
    return {f"{h} -> {t}": v for h, r in replies.items() for t, v in r["tcp"].items()}


def diff(session: Session, files: dict[str, dict], generation: str) -> list[dict[str, Any]]:
    """What `up` would do, per host and owner, without changing anything."""
    states = session.each("reading hosts", lambda c: c.state(timeout=STATE_TIMEOUT))
    rows = []
    for host, st in states.items():
        old = _owner_hashes(st.get("manifest"))
        new = _owner_hashes(_manifest_of(files[host]))
        alive = {p["group"] for p in st.get("programs", []) if p["state"] in ALIVE}
        for owner in sorted(set(old) | set(new)):
            if owner not in new:
                change = "remove"
            elif owner not in old:
                change = "add"
            elif old[owner] != new[owner]:
                change = "restart (changed)"
            elif ((st.get("started") or {}).get(owner) or {}).get("owner_hash") not in (None, new[owner]):
                change = "restart (runs an older config)"
            elif owner not in alive:
                change = "start (not running)"
            else:
                change = "none"
            rows.append({"host": host, "owner": owner, "change": change,
                         "generation": st.get("generation"), "new_generation": generation})
    return rows
