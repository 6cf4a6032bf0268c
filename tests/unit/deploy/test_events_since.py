"""`events --since`: durations back from now, epoch seconds, local date-times."""
from __future__ import annotations

import time

import pytest

from launcher.deploy.events import line, parse_since

NOW = 1_700_000_000.0


@pytest.mark.parametrize("text, want", [("90s", NOW - 90), ("10m", NOW - 600), ("2h", NOW - 7200),
                                        ("1d", NOW - 86400), ("1.5m", NOW - 90), ("1699999000", 1699999000.0)])
def test_since_forms(text, want):
    assert parse_since(text, NOW) == want


def test_since_a_local_date_time_and_a_clock_time_today():
    assert parse_since("2023-11-14T22:13:20", NOW) == time.mktime(time.strptime("2023-11-14T22:13:20",
                                                                                "%Y-%m-%dT%H:%M:%S"))
    today = time.localtime(NOW)
    got = time.localtime(parse_since("01:02:03", NOW))
    assert (got.tm_year, got.tm_yday, got.tm_hour, got.tm_min, got.tm_sec) == (today.tm_year, today.tm_yday, 1, 2, 3)


@pytest.mark.parametrize("text", ["yesterday", "5x", "", "12", "-3m"])
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError, match="give a duration"):
        parse_since(text, NOW)


def test_an_exit_shows_its_last_log_lines_under_it():
    text = line({"time": NOW + 0.25, "host": "h2", "kind": "exit", "message": "demo-r1 killed by signal 9 (EXITED)",
                 "log": ["a", "b"]})
    first, *rest = text.splitlines()
    assert first.endswith("h2           exit             demo-r1 killed by signal 9 (EXITED)")
    assert ".250" in first and rest == ["    | a", "    | b"]
