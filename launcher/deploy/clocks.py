"""How far each host's clock is from the operator's, for `check`.

The agents refuse each other's messages when their clocks differ by more than the signature
window (host/messages.py WINDOW)."""
from __future__ import annotations

import time

from ..core.errors import LauncherError
from .remote import HostClient
from .session import Session

WINDOW = 300.0  # host/messages.WINDOW (the operator side does not import host code)
WARN = 1.0      # seconds: an NTP-kept clock is far closer; beyond this NTP is off or broken


def host_offset(client: HostClient) -> float:
    """The host's clock minus the operator's (s), read with `date` and halved round trip."""
    t0 = time.time()
    res = client.transport.run(["date", "+%s.%N"], timeout=30)
    t1 = time.time()
    text = res.stdout.decode("utf-8", "replace").strip()
    try:
        host = float(text)
    except ValueError:
        raise LauncherError(f"host {client.name}: cannot read its clock: `date` said {text!r}") from None
    return host - (t0 + t1) / 2


def judge(offset: float) -> str:
    """One verdict per host, worst first: what `check` prints and decides its exit code on."""
    if abs(offset) > WINDOW / 2:  # two hosts skewed each way by this much refuse each other
        return f"SKEWED: {offset:+.1f} s from the operator's clock; agents refuse messages beyond ±{WINDOW:.0f} s"
    if abs(offset) > WARN:
        return f"off by {offset:+.1f} s (is NTP running?)"
    return f"ok ({offset:+.3f} s)"


def clock_report(session: Session) -> dict[str, str]:
    offsets, failures = session.fan_out(host_offset)
    out = {h: judge(o) for h, o in offsets.items()}
    out.update({h: f"unreachable: {getattr(e, 'detail', e)}" for h, e in failures.items()})
    return out
