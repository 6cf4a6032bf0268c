"""Several programs' log lines as one stream in time order, by the timestamp each line carries.

supervisord writes a program's output as it comes, unstamped, so the time of a line is the one
the program printed. The serving stacks all stamp theirs, in a few formats, at the start of the
line: python logging (`2026-12-07 06:46:31,123`, ATB and torch), ISO 8601 with `T` and an offset,
MindIE's `[2026-12-07 06:46:31.123+08:00]`, vLLM's `INFO 12-07 06:46:31` (no year: this year),
glog's `I1207 06:46:31.123456` (Ascend's C++ parts). A line without a stamp (a traceback's
lines) keeps its place after the stamped line before it in its own log. Stamps with a UTC offset
are compared in UTC; stamps without one as written (a deployment's hosts share a time zone).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

_ISO = re.compile(r"\[?(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
                  r"(Z|[+-]\d\d:?\d\d)?\]?")
_VLLM = re.compile(r"(?:[A-Z]+ +)(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?")
_GLOG = re.compile(r"[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")


def _seconds(year: int, month: int, day: int, h: int, m: int, s: int, frac: str | None,
             offset: str | None = None) -> float | None:
    try:
        stamp = datetime(year, month, day, h, m, s, tzinfo=timezone.utc)
    except ValueError:  # 13-45 is not a date: not a stamp
        return None
    value = stamp.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)
    if offset and offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        value -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return value


def line_time(line: str, year: int) -> float | None:
    """Seconds (as UTC, see the module's note) of the stamp at the start of ``line``, or None."""
    head = line[:48]
    if m := _ISO.match(head):
        y, mo, d, h, mi, s, frac, off = m.groups()
        return _seconds(int(y), int(mo), int(d), int(h), int(mi), int(s), frac, off)
    if m := _VLLM.match(head):
        mo, d, h, mi, s, frac = m.groups()
        return _seconds(year, int(mo), int(d), int(h), int(mi), int(s), frac)
    if m := _GLOG.match(head):
        mo, d, h, mi, s, frac = m.groups()
        return _seconds(year, int(mo), int(d), int(h), int(mi), int(s), frac)
    return None


def merged(logs: list[tuple[str, list[str]]], year: int) -> list[tuple[str, str]]:
    """(prefix, line) of every line of every log, in time order; one log's lines keep their order,
    an unstamped line goes with the stamped one before it (before any: with the log's first)."""
    keyed = []
    for n, (prefix, lines) in enumerate(logs):
        stamps = [line_time(line, year) for line in lines]
        first = next((t for t in stamps if t is not None), float("-inf"))
        last = first
        for i, (line, t) in enumerate(zip(lines, stamps)):
            last = t if t is not None and t >= last else last  # never before what came earlier in its log
            keyed.append(((last, n, i), prefix, line))
    keyed.sort(key=lambda k: k[0])
    return [(prefix, line) for _, prefix, line in keyed]
