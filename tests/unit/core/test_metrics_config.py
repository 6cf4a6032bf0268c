"""defaults.metrics: where each host's agent serves /metrics, as rendered into its gang.json."""
from __future__ import annotations

import json

import pytest

from launcher.core.pipeline import rendered
from tests.helpers import compile_checked, line_of, spec_errors

HEAD = "version: 1\nname: m\ndefaults:\n  agent_port: 29400\n"
HOSTS = ("hosts:\n  - {name: a, address: 10.0.0.1, devices: {0: 10.1.0.1}}\n"
         "  - {name: b, address: 10.0.0.2, devices: {0: 10.1.0.2}}\n")


def endpoints(defaults: str) -> dict[str, object]:
    _, files = rendered(compile_checked(HEAD + defaults + HOSTS).plan)
    return {h: json.loads(f["gang.json"].content)["metrics"] for h, f in files.items()}


@pytest.mark.parametrize("defaults, want", [
    ("", {"a": {"address": "10.0.0.1", "port": 29391}, "b": {"address": "10.0.0.2", "port": 29391}}),
    ("  metrics: true\n", {"a": {"address": "10.0.0.1", "port": 29391}, "b": {"address": "10.0.0.2", "port": 29391}}),
    ("  metrics: false\n", {"a": None, "b": None}),
    ("  metrics: {port: 9100, listen: loopback}\n",
     {"a": {"address": "127.0.0.1", "port": 9100}, "b": {"address": "127.0.0.1", "port": 9100}}),
    ("  metrics: {listen: any}\n", {"a": {"address": "0.0.0.0", "port": 29391}, "b": {"address": "0.0.0.0", "port": 29391}}),
    ("  metrics: {listen: 192.168.9.9}\n",
     {"a": {"address": "192.168.9.9", "port": 29391}, "b": {"address": "192.168.9.9", "port": 29391}}),
])
def test_where_the_agent_serves_metrics(defaults, want):
    assert endpoints(defaults) == want


def test_the_metrics_port_may_not_be_the_agent_port():
    text = HEAD + "  metrics: {port: 29400}\n" + HOSTS
    errors = spec_errors(text)
    assert errors == [f"F:{line_of(text, 'metrics:')}:19: error: defaults.metrics.port: "
                      "the metrics port is the agent_port (29400)"]


@pytest.mark.parametrize("bad", ["{listen: somewhere}", "{port: 0}", "{path: /m}", "yes please"])
def test_a_bad_metrics_key_is_an_error_at_its_line(bad):
    text = HEAD + f"  metrics: {bad}\n" + HOSTS
    errors = spec_errors(text)
    assert len(errors) == 1 and errors[0].startswith(f"F:{line_of(text, 'metrics:')}:"), errors
    assert "defaults.metrics" in errors[0], errors
