"""A gang's first restart in the window is immediate; the backoff starts with the second (issue 11, point 6).

A rank that always crashes (exit 3) makes its leader restart the gang until the budget is
spent. Asserted on what the leader recorded (its log, state/gang.json), never on durations.
"""
from __future__ import annotations

import json
import re

from tests.helpers import run_cli
from tests.integration.deploy.test_local_deploy import deployment, wait_failed  # noqa: F401


def test_the_first_restart_is_at_once_and_the_backoff_starts_with_the_second(deployment, tmp_path):
    path = deployment(crash=True, restart_max=3)
    run_cli("up", path)
    rows = wait_failed(path)
    assert rows[0]["restarts"] == 3
    leader = tmp_path / "deploy" / "itest" / "node-a"  # the instance's first host
    log = (leader / "logs" / "launcher-agent.log").read_text()
    waits = re.findall(r"gang model: .*?stopping it on 2 hosts, (restart at once|restart in \d+ s)", log)
    assert waits == ["restart at once", "restart in 1 s", "restart in 2 s"], log
    record = json.loads((leader / "state" / "gang.json").read_text())["model"]
    assert record["state"] == "FAILED" and record["backoff"] == 2.0
