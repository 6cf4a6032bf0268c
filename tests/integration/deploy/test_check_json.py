"""`check --json` says what its exit code says: an unreachable TCP target is not ok (issue 11, §9).
Local transport; the links are checked against the fake hccn_tool (the NPU boundary). The CLI runs
in a network namespace of its own with only loopback, so the unreachable address (in the tests'
10.213.0.0/16) has no route and no packet leaves this process's namespace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def fake_tool(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler to build the fake hccn_tool")
    out = tmp_path_factory.mktemp("fake-npu")
    subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "native"), f"OUT={out}"], check=True,
                   capture_output=True, timeout=300)
    return out / "fake_hccn_tool"


UNROUTED = "10.213.254.1"  # no route to it inside the CLI's own network namespace


def test_check_json_is_not_ok_when_a_tcp_target_is_unreachable(tmp_path, fake_tool):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the CLI a network namespace of its own")
    hosts = ""
    # b cannot reach a's rendezvous port: a's address has no route in the CLI's namespace
    for name, addr, dev_ip in (("a", UNROUTED, "10.0.0.1"), ("b", "127.0.0.1", "10.0.1.1")):
        (tmp_path / f"{name}.scenario").write_text(f"devices=0\nip.0={dev_ip}\n")
        tool = tmp_path / f"{name}.hccn_tool"
        tool.write_text(f"#!/bin/sh\nFAKE_NPU_SCENARIO={tmp_path / (name + '.scenario')} exec {fake_tool} \"$@\"\n")
        tool.chmod(0o755)
        hosts += (f"  - {{name: {name}, address: {addr}, transport: local, hccn_tool: {tool}, "
                  f"devices: {{0: {dev_ip}}}}}\n")
    topo = tmp_path / "topo.yaml"
    topo.write_text(f"version: 1\nname: tcpck\ndefaults: {{deploy_dir: {tmp_path / 'deploy'}}}\nhosts:\n{hosts}"
                    "instances:\n  - {name: x, hosts: [a, b], command: [sleep, '1'], rendezvous_port: 29957}\n")
    proc = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           sys.executable, "-m", "launcher", "check", str(topo), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    doc = json.loads(proc.stdout)
    assert doc["failures"] == {}, doc["failures"]  # the links are fine: only TCP fails
    assert doc["tcp"][f"b -> {UNROUTED}:29957"].startswith("unreachable"), doc["tcp"]
    assert proc.returncode == 1, proc.stderr
    assert doc["ok"] is False
