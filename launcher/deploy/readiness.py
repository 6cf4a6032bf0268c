"""Readiness as part of state: does each owner answer its probe on each of its hosts now.

`status` asks once (no wait) for every owner that runs, and `up` asks for the owners it leaves
running unchanged: a program can run and not answer (hung, its port lost), and neither may
call that ready. A log probe is left out here: the line it looks for says the program became
ready once, and may have scrolled out of the log since; it says nothing of now.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from ..core.probes import ProbeSpec, probe_specs
from .session import Session

Key = tuple[str, str]  # (owner, host)


def live_specs(session: Session, owner: str, host: str) -> list[ProbeSpec]:
    """The owner's probes on ``host`` that say whether it answers now (not a log probe)."""
    return [s for s in probe_specs(session.plan, owner, host) if s.kind != "log"]


def probe_now(session: Session, wanted: Mapping[str, list[str]], timeout: float = 0.0
              ) -> tuple[dict[Key, str | None], dict[str, BaseException]]:
    """host -> owners: one call per host, every probe once (``timeout`` > 0: until all pass).
    Returns (owner, host) -> None when it answers, else what its probe saw; and the hosts that
    could not be asked. Owners without a live probe are left out."""
    specs = {h: [(o, s) for o in owners for s in live_specs(session, o, h)] for h, owners in wanted.items()}
    specs = {h: s for h, s in specs.items() if s}

    def ask(c: Any) -> dict[str, Any]:
        mine = specs[c.name]
        return c.call("probe", str(timeout), stdin=json.dumps([s.to_json() for _, s in mine]).encode(),
                      timeout=timeout + 60 + sum(s.timeout for _, s in mine))
    replies, failures = session.fan_out(ask, list(specs))
    out: dict[Key, str | None] = {}
    for h, reply in replies.items():
        ended = reply.get("exited")
        if ended:  # the host stopped waiting: a program ended (its owner's, by name or group)
            owner = next((o for o, s in specs[h] if ended["program"] in (o, *s.programs)), None)
            if owner is not None:
                out[(owner, h)] = exit_text(ended)
        for (owner, _), seen in zip(specs[h], reply["probes"]):
            if seen["error"]:  # several probes of one owner: every one must pass; say the first that did not
                out[(owner, h)] = out.get((owner, h)) or f"{seen['probe']}: {seen['error']}"
            else:
                out.setdefault((owner, h), None)
    return out, failures


def exit_text(exited: Mapping[str, Any]) -> str:
    """A program that ended while a ready wait waited for it (act_probe's `exited`), with its
    last log lines: why it will not become ready, in its own words."""
    lines = [str(ln) for ln in exited.get("log") or []][-10:]
    if exited["state"] == "FAILED":  # the gang's record: its restart budget is spent
        head = f"{exited['program']} FAILED before it was ready ({exited.get('reason')})"
    else:
        code = f", exit code {exited['exitstatus']}" if exited.get("exitstatus") not in (None, 0) else ""
        head = f"{exited['program']} {exited.get('reason') or 'exited'} before it was ready ({exited['state']}{code})"
    return head + ("; its last log lines:" + "".join(f"\n    | {ln}" for ln in lines) if lines else "; its log is empty")


def unchanged_not_ready(session: Session, unchanged: list[str], owners: Mapping[str, list[str]], timeout: float,
                        say: Callable[[str], None]) -> list[str]:
    """What `up` leaves running must answer its probe too. One round for all of them (one call
    per host); each that does not answer gets ``timeout`` s to (a server busy or still loading
    after its agent restarted it), and is then named, not restarted: a probe that fails is not
    a crash (the agent restarts what exits), and restarting a server that is alive costs its
    load time and what it serves; `launcher restart --instance` does it deliberately."""
    wanted: dict[str, list[str]] = {}
    for o in unchanged:
        for h in owners[o]:
            wanted.setdefault(h, []).append(o)
    found, failed = probe_now(session, wanted)
    late = list(dict.fromkeys([o for (o, _), why in found.items() if why]
                              + [o for h in failed for o in wanted[h] if live_specs(session, o, h)]))
    lines = []
    for o in late:
        now, cut = probe_now(session, {h: [o] for h in owners[o]}, timeout)
        why = "; ".join([f"{h}: {w}" for (_, h), w in now.items() if w]
                        + [f"{h}: {exc}" for h, exc in cut.items()])
        say(f"  {o} (left running) is NOT ready: {why}" if why else f"  {o} (left running) is ready")
        if why:
            lines.append(f"{o} was left running (unchanged) but does not answer its probe ({why}); it was not "
                         f"restarted: `launcher restart --instance {o}` restarts it")
    return lines
