"""The commands that act on a deployment's hosts: up, down, restart, and the checks of `check`.

`up` in phases, each across all hosts in parallel, and a failure in a phase stops before
the next one, so a failed `up` leaves every host on its previous generation:
  1. state    reach every host; learn its generation and what runs
  2. prepare  ship the runtime (first time) and the new generation, without touching anything
  3. switch   atomically point `current` at the new generation; supervisord rereads
              (a host that fails here is rolled back with the others)
  4. start    level by level (depends_on, levels.py), start each instance that changed or is
              not running, on all of its hosts at once (a gang), and report the start skew
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core import preflight
from ..core.errors import LauncherError
from ..core.graph import restart_after
from ..core.plan import File, Plan
from ..core.defaults import READY_TIMEOUT
from ..core.preflight_a3 import tls_mismatches
from ..host.upload import digest
from .gang import alive_anywhere, gang_start, relink_decoders, start_through_leaders
from .interrupt import Interrupted
from .levels import start_levels
from .readiness import unchanged_not_ready
from .records import HostState, rendered_hashes
from .remote import HostClient
from .runtime import build_runtime
from .session import STATE_TIMEOUT, Session, owners_on, timed
from .transport import HostsFailed, TransportError, fan_out
from .uploads import guessed_blank, undo_blank, upload_round

AGENT_BACK_TIMEOUT = 30.0  # s: an agent restarted by the switch it ran is back within its start

Files = Mapping[str, Mapping[str, File]]  # host -> path -> file of a rendered generation


@dataclass(frozen=True)
class UpReport:
    generation: str
    started: list[str]
    unchanged: list[str]
    skew: dict[str, float]
    seconds: float
    refused: dict[str, list[str]] = field(default_factory=dict)  # instance -> preflight failures


def run_preflight(session: Session, instances: list[str] | None = None
                  ) -> tuple[list[preflight.HostCheck], dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Run the link checker for the instances on their hosts, in parallel; failures per instance."""
    checks = preflight.checks_for(session.plan, instances)

    def run(chk: preflight.HostCheck) -> dict[str, Any]:
        return session.clients[chk.host].call("linkcheck", *chk.tool_args, stdin=json.dumps(chk.spec).encode(),
                                              timeout=300)
    results, failures = fan_out(checks, run, key=lambda chk: chk.key, forks=session.forks)
    replies: dict[str, dict[str, Any]] = {}
    for chk in checks:
        k = chk.key
        if k in failures:
            reply: dict[str, Any] = {"report": None, "stderr": str(failures[k]), "exit": None}
        else:
            reply = results[k]
        replies[k] = reply
    return checks, replies, link_failures(session.plan, checks, replies)


def link_failures(plan: Plan, checks: list[preflight.HostCheck],
                  replies: Mapping[str, dict[str, Any]]) -> dict[str, list[str]]:
    """instance -> what its checker runs found wrong (``replies`` by HostCheck.key), and a TLS switch
    that differs across a world (only visible with every host's reply at hand)."""
    bad: dict[str, list[str]] = {}
    for chk in checks:
        lines = preflight.failure_lines(chk, replies[chk.key])
        if lines:
            bad.setdefault(chk.instance, []).extend(lines)
    for inst, lines in tls_mismatches(plan, [c.host for c in checks], [replies[c.key] for c in checks]).items():
        bad.setdefault(inst, []).extend(lines)
    return bad


def _needs_start(owner: str, hosts: list[str], old: Mapping[str, HostState],
                 new_hashes: Mapping[str, Mapping[str, str]]) -> bool:
    """An owner (re)starts if its files changed on any host or any of its programs is not alive."""
    for h in hosts:
        state = old[h]
        if state.hashes.get(owner) != new_hashes[h].get(owner):
            return True
        if state.runs_older_config(owner, new_hashes[h].get(owner)):
            return True  # still runs an older config (an interrupted or stopped roll)
        progs = state.of(owner)
        if not progs or any(not p.alive for p in progs):
            return True
    return False


def up(session: Session, files: Files, generation: str, skip_preflight: bool = False,
       ready_timeout: float = READY_TIMEOUT, strategy: str = "auto", max_unavailable: int = 1) -> UpReport:
    t0 = time.monotonic()
    plan = session.plan
    say = timed(session.progress, t0)
    preflight_flag = skip_preflight
    skip_preflight = skip_preflight or not plan.preflight
    say(f"up {plan.deployment}: generation {generation} on {len(plan.hosts)} hosts")
    checked = set() if skip_preflight else {i.name for i in plan.instances}
    sent = old = None
    if session.lock_host_blank():  # a first deploy, or one after `down --purge`: no state round
        old = guessed_blank(session)
        say(f"  [1/4] {next(iter(session.clients))} (the lock host) has nothing of {plan.deployment}: "
            f"uploading to {len(old)} hosts, each only if it has nothing either")
        sent = upload_round(session, files, generation, old, checked, say, if_blank=True)
    if sent is None:
        old = session.each("reaching hosts", lambda c: c.state(timeout=STATE_TIMEOUT))
        say(f"  [1/4] reached {len(old)} hosts")
        # 2. one upload per host that needs anything: runtime (first time), generation, agent key
        sent = upload_round(session, files, generation, old, checked, say)
    assert old is not None and sent is not None
    previous = {h: s.generation for h, s in old.items()}
    uploaded, needs, blank, early, together = sent.replies, sent.needs, set(sent.blank), sent.early, list(sent.together)
    owners = owners_on(plan)
    early_at = {h: r["switched"]["started"]["started_at"] for h, r in uploaded.items()
                if r.get("switched", {}).get("started")}
    try:
        skew_together = start_through_leaders(session, together, owners)
    except LauncherError:
        undo_blank(session, blank, say)
        say("  start failed; the blank hosts the upload had switched were put back to nothing")
        raise
    say(f"  [2/4] uploaded generation {generation} to {len(needs)} hosts" if needs else
        f"  [2/4] every host already has generation {generation}")
    new_hashes = {h: rendered_hashes(files[h]) for h in files}
    to_start = [o for o, hosts in owners.items() if _needs_start(o, hosts, old, new_hashes)]
    # LLM-DataDist decoders relink to restarted prompts; restart_with: followers restart after what they follow
    to_start += restart_after(plan.links, plan.restart_with, to_start)
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
    fresh = [o for o in to_start if o in first and not alive_anywhere(o, owners[o], old)]
    skew: dict[str, float] = {}
    # a host given this launcher's runtime switches to it too (its agent then runs the new code)
    settled = all(s.generation == generation and s.supervisord and not s.runtime_missing for s in old.values())
    if not settled:
        started_at = switch_all(session, generation, previous,
                                {h: [o for o in fresh if h in owners[o] and o not in early] for h in session.clients},
                                switched=blank,
                                digests={h: digest([(p, f.mode, f.content) for p, f in files[h].items()])
                                         for h in files})
        started_at.update(early_at)
        say(f"  [3/4] switched {len(files)} hosts to {generation}")
        for o in fresh:
            times = [started_at[h] for h in owners[o] if h in started_at]
            skew[o] = skew_together.get(o, max(times) - min(times) if times else 0.0)
        if fresh:
            say(f"  [4/4] started {', '.join(f'{o} (skew {skew[o] * 1000:.0f} ms)' for o in fresh)}")
    else:
        fresh = []
    # 4. the rest level by level, each owner once what it depends on passes its probe
    session.interrupt.check(f"every host is on generation {generation}; nothing else was restarted")
    removed = {h: sorted(set(old[h].hashes) - set(new_hashes[h])) for h in old}
    if any(removed.values()):
        session.each("remove what the plan no longer has", lambda c: c.call("prune"),
                     [h for h, r in removed.items() if r])
        say(f"  removed {', '.join(sorted({o for r in removed.values() for o in r}))}")
    rest = [o for o in to_start if o not in fresh]
    progress = start_levels(session, rest, owners, old, generation=generation, strategy=strategy,
                            max_unavailable=max_unavailable, ready_timeout=ready_timeout,
                            not_ready={o: "refused by the link check" for o in refused}, skew=skew, say=say,
                            started_first=tuple(fresh))
    unchanged = [o for o in owners if o not in to_start and o not in refused]
    if unchanged:
        say(f"  unchanged, left running: {', '.join(unchanged)}")
    # running is not ready: what it leaves running must answer too (unless this up found it not ready already)
    unanswered = unchanged_not_ready(session, [o for o in unchanged if o not in progress.not_ready], owners,
                                     ready_timeout, say)
    for inst, lines in refused.items():
        say(f"  {inst} NOT started: its HCCL links are not healthy:")
        for line in lines:
            say(f"    {line}")
    try:
        progress.raise_if_incomplete()
    except LauncherError as exc:
        raise LauncherError("\n".join([str(exc), *unanswered])) from None
    if unanswered:
        raise LauncherError("\n".join(unanswered))
    return UpReport(generation, to_start, unchanged, skew, time.monotonic() - t0, refused)


def switch_all(session: Session, generation: str, previous: Mapping[str, str | None],
               start: Mapping[str, list[str]] | None = None,
               switched: set[str] | frozenset[str] = frozenset(),
               digests: Mapping[str, str] | None = None) -> dict[str, float]:
    """Switch every host (and start ``start[host]`` groups there); ``switched`` hosts are on the
    generation already (blank hosts, switched by their upload): they only start. If any host
    fails, put all of them back on their previous generation. Returns when each host started."""
    runtime = build_runtime().id
    start = start or {}

    def switch(c: HostClient) -> dict[str, Any]:
        if c.name in switched:
            return {"started": c.call("start", *start[c.name])} if start.get(c.name) else {}
        extra: tuple[str, ...] = (f"--start={','.join(start[c.name])}",) if start.get(c.name) else ()
        if digests and c.name in digests:  # the host checks its copy right before it switches
            extra += (f"--digest={digests[c.name]}",)
        return c.call("switch", generation, runtime, *extra)

    results, failures = session.fan_out(switch)
    for h, r in sorted(results.items()):  # never two copies of a rank: a dead supervisord's are stopped first
        if r.get("stopped_orphans"):
            session.progress(f"  {h}: stopped what a dead supervisord left running: "
                             + ", ".join(f"{o['name']} (pid {o['pid']})" for o in r["stopped_orphans"]))
    if not failures:
        return {h: r["started"]["started_at"] for h, r in results.items() if r.get("started")}
    back = [h for h in session.clients if h in results or h in failures or h in switched]
    _, unswitched = session.fan_out(lambda c: c.call("switch", previous.get(c.name) or "-", runtime), back)
    # verified, not assumed: a host whose switch back failed, or that cannot be asked, is named
    found, unknown = session.fan_out(lambda c: c.call("state")["generation"], back)
    lost = [h for h in back if h not in found]
    via_agent = switch_back_through_agents(session, generation, previous, lost, [h for h in back if h in found])
    found.update(via_agent)
    raise LauncherError("\n".join([str(HostsFailed(failures, f"switch to {generation}")), "the hosts put back:",
                                    *rollback_lines(generation, previous, back, found,
                                                    {h: e for h, e in {**unswitched, **unknown}.items()
                                                     if h not in via_agent}, via_agent=set(via_agent))]))


def switch_back_through_agents(session: Session, generation: str, previous: Mapping[str, str | None],
                               lost: list[str], reachable: list[str]) -> dict[str, str | None]:
    """Put back hosts that SSH cannot reach through their agents (a reachable host relays a signed
    `switch-back` over the agent port: host/switchback.py). Returns each one's generation as its
    agent reports it afterwards; a host whose agent did not answer is left out (unknown)."""
    if not lost or not reachable:
        return {}
    relay = session.clients[reachable[0]]
    addresses = {hp.host.name: hp.host.address for hp in session.plan.hosts}
    runtime = build_runtime().id

    def ask(host: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return relay.call("relay", addresses[host], str(session.plan.agent_port), host, stdin=json.dumps(body).encode(),
                          timeout=timeout)

    def back(c: HostClient) -> str | None:
        try:
            ask(c.name, {"op": "switch-back", "generation": previous.get(c.name) or "-", "runtime": runtime,
                         "if_current": generation}, 200)
        except TransportError:
            pass  # the switch may have restarted the agent that ran it: its reply is lost, not the switch
        deadline = time.monotonic() + AGENT_BACK_TIMEOUT
        while True:  # verified, not assumed: ask where it is now (the agent comes back if restarted)
            try:
                return ask(c.name, {"op": "generation", "group": ""}, 30).get("generation")
            except TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
    done, _ = session.fan_out(back, lost)
    return done


def rollback_lines(generation: str, previous: Mapping[str, str | None], hosts: list[str],
                   found: Mapping[str, str | None], unknown: Mapping[str, BaseException],
                   via_agent: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Per host, where a rolled-back switch left it: its previous generation, or not."""
    lines = []
    how = {h: " through its agent: SSH did not answer" if h in via_agent else "" for h in hosts}
    why = {h: str(exc).removeprefix(f"host {h}: ") for h, exc in unknown.items()}
    for h in hosts:
        was = previous.get(h) or "nothing"
        if h not in found:
            lines.append(f"  {h}: state unknown ({why[h]}): may be on generation {generation} "
                         f"(or back on {was}); its gangs' agents do not restart a gang across hosts on "
                         "different generations; `launcher up` again makes them agree")
        elif found[h] == previous.get(h):
            lines.append(f"  {h}: back on {'generation ' + was if previous.get(h) else 'nothing'} (verified{how[h]})")
        else:
            lines.append(f"  {h}: NOT put back: on generation {found[h] or 'nothing'}, was {was}"
                         + (f" ({why[h]})" if h in unknown else ""))
    return lines


def restart_instance(session: Session, instance: str, ready_timeout: float = READY_TIMEOUT) -> float:
    """Gang-restart one owner; a prompt instance's linked decoders restart after it (relink)."""
    owners = owners_on(session.plan)
    if instance not in owners:
        raise LauncherError(f"no instance or service {instance!r} in this plan")
    skew = gang_start(session, instance, owners[instance])
    relink_decoders(session, [instance], owners, ready_timeout)
    return skew


def down(session: Session, purge: bool) -> dict[str, dict[str, Any]]:
    args = ("--purge",) if purge else ()
    result = session.each("down", lambda c: c.call("down", *args))
    # nothing of the deployment lingers, not even a connection; all hosts at once, each bounded
    said, _ = session.fan_out(lambda c: getattr(c.transport, "disconnect", lambda: None)())
    for host, why in sorted(said.items()):
        if why:
            session.progress(f"warning: {host}: {why}")
    return result


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
