"""`launcher events`: every host's event journal (host/events.py), merged into one timeline.

Each host is asked for its entries since a time (its own clock: the hosts' clocks are what
`check` compares with the operator's); the timeline is sorted by time, then host. Following
(-f) asks again from the newest time each host answered with, and drops what it already
printed at exactly that time.
"""
from __future__ import annotations

import json
import re
import time

from .session import Session

SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """--since: a duration back from now (90s, 10m, 2h, 1d), epoch seconds, or a local
    date-time (2024-05-01T12:00:00 or 12:00:00 today). ValueError naming the forms otherwise."""
    if m := SINCE.match(text):
        return now - float(m.group(1)) * UNITS[m.group(2)]
    try:
        value = float(text)
        if value > 1e9:
            return value
    except ValueError:
        pass
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    try:
        clock = time.strptime(text, "%H:%M:%S")
        today = time.localtime(now)
        return time.mktime((today.tm_year, today.tm_mon, today.tm_mday, clock.tm_hour, clock.tm_min,
                            clock.tm_sec, 0, 0, -1))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration (90s, 10m, 2h, 1d), epoch seconds, "
                         "YYYY-MM-DDTHH:MM:SS or HH:MM:SS") from None


class Timeline:
    """The merged journal of a session's hosts; ``poll`` returns what is new since the last poll."""

    def __init__(self, session: Session, since: float):
        self.session = session
        self.since = {h: since for h in session.clients}
        self.at_since: dict[str, set[str]] = {h: set() for h in session.clients}  # printed at exactly since

    def poll(self) -> tuple[list[dict], dict[str, str]]:
        """(new events in time order, host -> why it did not answer)."""
        replies, failures = self.session.fan_out(lambda c: c.call("events", repr(self.since[c.name])))
        out = []
        for host, reply in replies.items():
            fresh = [e for e in reply.get("events", [])
                     if json.dumps(e, sort_keys=True) not in self.at_since[host]]
            if fresh:
                newest = max(float(e["time"]) for e in fresh)
                if newest > self.since[host]:
                    self.since[host], self.at_since[host] = newest, set()
                self.at_since[host] |= {json.dumps(e, sort_keys=True) for e in fresh if float(e["time"]) == newest}
            out += fresh
        out.sort(key=lambda e: (float(e["time"]), str(e.get("host", ""))))
        return out, {h: f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc) for h, exc in failures.items()}


def line(e: dict) -> str:
    """One event as the table shows it: local time with milliseconds, host, what, and the dead
    rank's last log lines under an exit."""
    t = float(e["time"])
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
    text = f"{stamp}  {e.get('host', '?'):<12} {e.get('kind', '?'):<16} {e.get('message', '')}"
    for log_line in e.get("log") or []:
        text += f"\n    | {log_line}"
    return text
