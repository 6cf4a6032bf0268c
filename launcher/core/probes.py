"""Readiness probes as the host side runs them (pure: a function of the plan)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .containers import container_name
from .model import Probe
from .plan import HostPlan, Plan



@dataclass(frozen=True)
class ProbeSpec:
    """One probe of an owner on one host, as hostside's `probe` action and the agent read it."""

    kind: str                       # http | tcp | command | log
    target: str | tuple[str, ...]   # URL, ADDR:PORT, argv, or a regex over the programs' logs
    timeout: float
    period: float
    programs: tuple[str, ...]       # the owner's programs on that host (whose logs a log probe reads)
    inside: bool = False            # a command run in the owner's container (`ENGINE exec`): only there

    def to_json(self) -> dict[str, Any]:
        """The spec as the host reads it (and gang.json holds it): keys in this order, always."""
        target = list(self.target) if isinstance(self.target, tuple) else self.target
        return {"timeout": self.timeout, "period": self.period, "programs": list(self.programs),
                "kind": self.kind, "target": target}


def probe_on(probe: Probe | None, first_host: bool) -> Probe | None:
    """An owner's probe as its program on one of its hosts has it: `on: first_host` probes the first
    host only (the others run workers that serve nothing, e.g. Ray workers beside a head and driver)."""
    return probe if probe is None or probe.on == "every_host" or first_host else None


def probe_specs(plan: Plan, instance: str, host: str) -> list[ProbeSpec]:
    """The instance's probe as run on one of its hosts (':PORT/path' means that host's address)."""
    return specs_on(next(h for h in plan.hosts if h.host.name == host), instance, plan.deployment)


def specs_on(hp: HostPlan, instance: str, deployment: str) -> list[ProbeSpec]:
    programs = tuple(p.name for p in hp.programs if p.owner == instance and p.kind != "container")
    first = next((p for p in hp.programs if p.owner == instance), None)
    probe: Probe | None = first.probe if first else None
    if first is None or probe is None:
        return []
    addr = hp.host.address
    timeout, period = probe.timeout, probe.period

    def spec(kind: str, target: str | tuple[str, ...]) -> ProbeSpec:
        return ProbeSpec(kind, target, timeout, period, programs)

    specs = []
    if probe.http:
        url = probe.http if "://" in probe.http else f"http://{addr}{probe.http}" if probe.http.startswith(":") \
            else f"http://{probe.http}"
        specs.append(spec("http", url))
    if probe.tcp:
        target = f"{addr}:{probe.tcp}" if probe.tcp.isdigit() else probe.tcp
        specs.append(spec("tcp", target))
    if probe.command and first.container is not None:  # in the container of its first program there (an
        # instance's: its per-host container)
        name = container_name(deployment, hp.host.name, first.name, hp.root)
        specs.append(ProbeSpec("command", (first.container.engine, "exec", name, *probe.command), timeout, period,
                               programs, inside=True))
    elif probe.command:
        specs.append(spec("command", tuple(probe.command)))
    if probe.log:
        specs.append(spec("log", probe.log))
    return specs


def dependency_probes(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """owner -> what the agent checks before it restarts it (gang.json's `depends`): each
    dependency's probes on each of its hosts that can be run from elsewhere (a log probe
    cannot, so it is left out)."""
    by_owner: dict[str, list[HostPlan]] = {}
    for hp in plan.hosts:
        for owner in dict.fromkeys(p.owner for p in hp.programs):
            by_owner.setdefault(owner, []).append(hp)
    remote = {dep: _from_elsewhere([s for hp in hps for s in specs_on(hp, dep, plan.deployment)])
              for dep, hps in by_owner.items()}
    return {owner: [{"owner": d, "probes": [s.to_json() for s in remote[d]]} for d in deps if remote.get(d)]
            for owner, deps in plan.depends.items()}


def restart_with_doc(plan: Plan, hp: HostPlan, owner: str, members: dict[str, list[str]],
                     addresses: dict[str, str]) -> dict[str, Any]:
    """gang.json's part of `restart_with:` for ``owner`` on this host.

    - `followers`: the instances that restart after it, each with the agents that lead it (an
      instance's first host), and `ready`: its own probes here that tell this run from the last
      (not a log probe: the last run's lines are still in the log). Its agent, having restarted
      it, waits for these, then tells the followers' leaders.
    - `restart_with`: for a follower, the agents that lead what it restarts with, to ask whether
      that is restarting (its crash restart waits for that restart, and follows its run)."""
    if not plan.restart_with:  # the usual plan, asked for every gang of every host
        return {}

    def leaders(name: str) -> list[dict[str, str]]:
        hosts = members[name][:1] if plan.instance(name) is not None else members[name]  # a service: each host
        return [{"host": h, "address": addresses[h]} for h in hosts]
    out: dict[str, Any] = {}
    followers = [f for f, of in plan.restart_with.items() if owner in of and f in members]
    if followers:
        out["followers"] = [{"group": f, "leaders": leaders(f)} for f in followers]
        out["ready"] = [s.to_json() for s in specs_on(hp, owner, plan.deployment) if s.kind != "log"]
    if plan.restart_with.get(owner):
        out["restart_with"] = [{"owner": d, "leaders": leaders(d)} for d in plan.restart_with[owner] if d in members]
    return out


def _from_elsewhere(specs: list[ProbeSpec]) -> list[ProbeSpec]:
    """The probes another host can run: http and tcp where there are any (a command such as
    etcdctl may not be installed on the other host), else commands; never a log probe."""
    net = [s for s in specs if s.kind in ("http", "tcp")]
    return net or [s for s in specs if s.kind == "command" and not s.inside]
