"""`check`'s verdict on a host's clock against the operator's."""
from __future__ import annotations

from launcher.deploy.clocks import WINDOW, judge
from launcher.host.messages import WINDOW as AGENT_WINDOW


def test_the_window_is_the_agents():
    assert WINDOW == AGENT_WINDOW


def test_verdicts():
    assert judge(0.0123) == "ok (+0.012 s)"
    assert judge(-4.0) == "off by -4.0 s (is NTP running?)"
    assert judge(400.0).startswith("SKEWED: +400.0 s from the operator's clock; agents refuse messages beyond ±300 s")
    assert judge(-(WINDOW / 2 + 1)).startswith("SKEWED: -151.0 s")
