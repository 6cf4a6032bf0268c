"""Rolling restart: K instances at a time, each ready before the next batch, stopping at the first failure.

Each instance restarts as a gang (all of its hosts at once) and is ready once its probe passes
on all of its hosts (no probe: its programs run); never more than K are down at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..core.errors import LauncherError
from ..core.graph import relink_after, restart_after
from ..core.plan import LinkMember
from ..core.defaults import READY_TIMEOUT
from .gang import gang_start, wait_ready
from .session import Session, owners_on


@dataclass
class RollReport:
    restarted: list[str] = field(default_factory=list)
    failed: str | None = None
    reason: str | None = None
    untouched: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # instance -> down until ready


def rolling_restart(session: Session, instances: list[str], max_unavailable: int,
                    ready_timeout: float = READY_TIMEOUT) -> RollReport:
    if max_unavailable < 1:
        raise LauncherError("--max-unavailable must be at least 1")
    owners = owners_on(session.plan)
    unknown = [i for i in instances if i not in owners]
    if unknown:
        raise LauncherError(f"no instance {', '.join(unknown)} in this plan")
    report = RollReport()
    say = session.progress
    batches = roll_batches(session.plan.links, instances, max_unavailable, session.plan.restart_with)
    instances = [i for b in batches for i in b]  # decoders of a prompt in the roll are in it now
    start = 0
    for batch in batches:
        session.interrupt.check(f"restarted and ready: {', '.join(report.restarted) or 'none'}; "
                                f"not restarted: {', '.join(instances[start:])}")
        t0 = time.monotonic()
        begun: list[str] = []
        try:
            for inst in batch:
                gang_start(session, inst, owners[inst])
                begun.append(inst)
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
        except LauncherError as exc:  # a host lost mid-batch (sshd gone): say where each instance is
            raise LauncherError(f"{exc}\n{_left(report, batch, begun, instances[start:])}") from exc
        start += len(batch)
    return report


def _left(report: RollReport, batch: list[str], begun: list[str], rest: list[str]) -> str:
    """Where a roll that failed on a host left each instance (the one whose restart failed is
    said above: gang_start's error)."""
    unsure = [i for i in begun if i not in report.restarted]
    failing = batch[len(begun)] if len(begun) < len(batch) else None
    before = [i for i in rest if i not in begun and i != failing]
    return (f"roll stopped: restarted and ready: {', '.join(report.restarted) or 'none'}; restarted, readiness "
            f"not known: {', '.join(unsure) or 'none'}; not restarted (running as before): "
            f"{', '.join(before) or 'none'}")


def roll_batches(links: Sequence[tuple[str, Sequence[LinkMember]]], instances: list[str], k: int,
                 restart_with: Mapping[str, Sequence[str]] | None = None) -> list[list[str]]:
    """The roll's batches of at most k. LLM-DataDist: a link does not survive its prompt's
    restart, so the decoders linked to a prompt in the roll join it, after every prompt of
    theirs in the roll and never in the same batch as one: they start once it listens. The
    instances that say `restart_with:` one in the roll join it the same way."""
    follows = restart_with or {}
    rolled = list(dict.fromkeys([*instances, *restart_after(links, follows, instances)]))
    prompts_of = {n: {p for p in rolled if n in relink_after(links, [p]) or p in follows.get(n, ())} for n in rolled}
    order: list[str] = []
    while len(order) < len(rolled):  # stable: the given order, each after its prompts
        order.append(next(n for n in rolled if n not in order and prompts_of[n] <= set(order)))
    batches: list[list[str]] = []
    for name in order:
        if not batches or len(batches[-1]) >= k or prompts_of[name] & set(batches[-1]):
            batches.append([])
        batches[-1].append(name)
    return batches
