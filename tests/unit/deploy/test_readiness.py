"""What `up` says of a program that ended while it waited for it to become ready (deploy/readiness.py)."""
from __future__ import annotations

from launcher.deploy.readiness import exit_text


def test_an_exit_before_ready_is_said_with_the_programs_own_last_lines():
    said = exit_text({"program": "serve", "state": "EXITED", "exitstatus": 126, "reason": None,
                      "log": [f"line {i}" for i in range(15)] + ["exec: /opt/srv: Permission denied"]})
    head, *lines = said.splitlines()
    assert head == "serve exited before it was ready (EXITED, exit code 126); its last log lines:"
    assert lines == [f"    | line {i}" for i in range(6, 15)] + ["    | exec: /opt/srv: Permission denied"]
    quiet = exit_text({"program": "serve", "state": "EXITED", "exitstatus": 0, "reason": None, "log": []})
    assert quiet == "serve exited before it was ready (EXITED); its log is empty"
    failed = exit_text({"program": "serve", "state": "FAILED", "exitstatus": None,
                        "reason": "rank program serve on n0 exited with exit code 126 (EXITED)", "log": ["x"]})
    assert failed == ("serve FAILED before it was ready (rank program serve on n0 exited with exit code 126 "
                      "(EXITED)); its last log lines:\n    | x")
