"""monitoring/alerts.yml: valid rules (`promtool check rules`), the behaviour its test file states
(`promtool test rules monitoring/alerts_test.yml`), and only metrics /metrics really serves."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.host.metrics import METRICS

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="needs promtool (Debian's prometheus package; tests/run.sh installs it)")


def promtool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *argv], cwd=MONITORING, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_rules_are_valid():
    proc = promtool("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_the_rules_do_what_their_tests_say():
    proc = promtool("test", "rules", "alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_rules_and_their_tests_use_only_served_metrics():
    for name in ("alerts.yml", "alerts_test.yml", "prometheus.example.yml"):
        used = set(re.findall(r"ascend_launcher_[a-z_]+", (MONITORING / name).read_text()))
        assert used <= set(METRICS), f"{name}: {sorted(used - set(METRICS))} are not served"
    assert {"ascend_launcher_gang_state", "ascend_launcher_gang_restarts_total",
            "ascend_launcher_generation_info"} <= set(re.findall(r"ascend_launcher_[a-z_]+",
                                                                 (MONITORING / "alerts.yml").read_text()))


@needs_promtool
def test_every_alert_has_a_test():
    rules = set(re.findall(r"- alert: (\w+)", (MONITORING / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts_test.yml").read_text()))
    assert rules and rules == tested, sorted(rules ^ tested)
