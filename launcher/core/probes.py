"""Readiness probes as the host side runs them (pure: a function of the plan)."""
from __future__ import annotations

from .model import Probe
from .plan import HostPlan, Plan

def probe_specs(plan: Plan, instance: str, host: str) -> list[dict]:
    """The instance's probe as run on one of its hosts (':PORT/path' means that host's address)."""
    return specs_on(next(h for h in plan.hosts if h.host.name == host), instance)


def specs_on(hp: HostPlan, instance: str) -> list[dict]:
    programs = [p.name for p in hp.programs if p.owner == instance]
    probe: Probe | None = next((p.probe for p in hp.programs if p.owner == instance), None)
    if probe is None:
        return []
    addr = hp.host.address
    base = {"timeout": probe.timeout, "period": probe.period, "programs": programs}
    specs = []
    if probe.http:
        url = probe.http if "://" in probe.http else f"http://{addr}{probe.http}" if probe.http.startswith(":") \
            else f"http://{probe.http}"
        specs.append({**base, "kind": "http", "target": url})
    if probe.tcp:
        target = f"{addr}:{probe.tcp}" if probe.tcp.isdigit() else probe.tcp
        specs.append({**base, "kind": "tcp", "target": target})
    if probe.command:
        specs.append({**base, "kind": "command", "target": list(probe.command)})
    if probe.log:
        specs.append({**base, "kind": "log", "target": probe.log})
    return specs


def dependency_probes(plan: Plan) -> dict[str, list[dict]]:
    """owner -> what the agent checks before it restarts it: each dependency's probes on each
    of its hosts that can be run from elsewhere (a log probe cannot, so it is left out)."""
    by_owner: dict[str, list[HostPlan]] = {}
    for hp in plan.hosts:
        for owner in dict.fromkeys(p.owner for p in hp.programs):
            by_owner.setdefault(owner, []).append(hp)
    remote = {dep: _from_elsewhere([s for hp in hps for s in specs_on(hp, dep)]) for dep, hps in by_owner.items()}
    return {owner: [{"owner": d, "probes": remote[d]} for d in deps if remote.get(d)]
            for owner, deps in plan.depends.items()}


def _from_elsewhere(specs: list[dict]) -> list[dict]:
    """The probes another host can run: http and tcp where there are any (a command such as
    etcdctl may not be installed on the other host), else commands; never a log probe."""
    net = [s for s in specs if s["kind"] in ("http", "tcp")]
    return net or [s for s in specs if s["kind"] == "command"]
