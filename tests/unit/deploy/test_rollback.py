"""What a failed switch's rollback says it left on each host (issue 11, point 2): verified, not assumed."""
from __future__ import annotations

from launcher.deploy.apply import rollback_lines
from launcher.deploy.transport import TransportError


def test_each_host_is_named_back_not_back_or_unknown_with_the_generation_it_may_be_on():
    lines = rollback_lines("g2", {"h1": "g1", "h2": "g1", "h3": "g1", "h4": None}, ["h1", "h2", "h3", "h4"],
                           {"h1": "g1", "h2": "g2", "h4": None},
                           {"h2": RuntimeError("switch: disk full"),
                            "h3": TransportError("h3", "ssh: connect to host h3 port 22: Connection refused")})
    assert lines[0] == "  h1: back on generation g1 (verified)"
    assert lines[1] == "  h2: NOT put back: on generation g2, was g1 (switch: disk full)"
    assert lines[2].startswith("  h3: state unknown (ssh: connect to host h3 port 22: Connection refused): "
                               "may be on generation g2 (or back on g1)")
    assert lines[3] == "  h4: back on nothing (verified)"


def test_a_roll_lost_mid_batch_says_where_each_instance_was_left():
    from launcher.deploy.rolling import RollReport, _left
    report = RollReport(restarted=["a"])
    # batch [b, c]: b's gang restarted, c's failed (said by gang_start's own error), d untouched
    assert _left(report, ["b", "c"], ["b"], ["b", "c", "d"]) == (
        "roll stopped: restarted and ready: a; restarted, readiness not known: b; "
        "not restarted (running as before): d")
    # the whole batch restarted, a probe lost: c is not known to be ready, d untouched
    assert _left(report, ["b", "c"], ["b", "c"], ["b", "c", "d"]).endswith(
        "readiness not known: b, c; not restarted (running as before): d")
