"""Rolling restart: instance by instance (each a gang), never more than K down, each ready
(its probe passes on all of its hosts) before the next batch; stop at the first failure."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .apply import Session, gang_start, owners_on
from .errors import LauncherError
from .probes import probe_specs

DEFAULT_READY_TIMEOUT = 120.0


@dataclass
class RollReport:
    restarted: list[str] = field(default_factory=list)
    failed: str | None = None
    reason: str | None = None
    untouched: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # instance -> down until ready


def wait_ready(session: Session, instance: str, hosts: list[str], timeout: float) -> str | None:
    """None when the instance is ready on every host, else why not."""
    def one(c):
        specs = probe_specs(session.plan, instance, c.name)
        if not specs:  # no probe: ready once its programs run
            time.sleep(1.0)
            st = c.state(timeout=30)
            bad = [p["name"] for p in st.get("programs", []) if p["group"] == instance and p["state"] != "RUNNING"]
            return {"ready": not bad, "probes": [{"probe": "running", "error": f"not running: {bad}" if bad else None}]}
        return c.call("probe", str(timeout), stdin=json.dumps(specs).encode(), timeout=timeout + 60)
    replies = session.each(f"probe {instance}", one, hosts)
    bad = [f"{h}: {p['probe']}: {p['error']}" for h, r in replies.items() for p in r["probes"] if p["error"]]
    return None if all(r["ready"] for r in replies.values()) else "; ".join(bad)


def rolling_restart(session: Session, instances: list[str], max_unavailable: int,
                    ready_timeout: float = DEFAULT_READY_TIMEOUT) -> RollReport:
    if max_unavailable < 1:
        raise LauncherError("--max-unavailable must be at least 1")
    owners = owners_on(session.plan)
    unknown = [i for i in instances if i not in owners]
    if unknown:
        raise LauncherError(f"no instance {', '.join(unknown)} in this plan")
    report = RollReport()
    say = session.progress
    for start in range(0, len(instances), max_unavailable):
        batch = instances[start:start + max_unavailable]
        session.interrupt.check(f"restarted and ready: {', '.join(report.restarted) or 'none'}; "
                                f"not restarted: {', '.join(instances[start:])}")
        t0 = time.monotonic()
        for inst in batch:
            gang_start(session, inst, owners[inst])
        say(f"  restarted {', '.join(batch)}; waiting until ready")
        for inst in batch:
            why = wait_ready(session, inst, owners[inst], ready_timeout)
            if why:
                report.failed, report.reason = inst, why
                report.untouched = instances[start + len(batch):]
                say(f"  {inst} did not become ready: {why}")
                say(f"  roll stopped; untouched: {', '.join(report.untouched) or 'none'}")
                return report
            report.seconds[inst] = time.monotonic() - t0
            report.restarted.append(inst)
            say(f"  {inst} ready after {report.seconds[inst]:.1f} s")
    return report
