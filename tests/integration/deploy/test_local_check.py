"""The link checker reaches a host as C source and is built there; without a compiler the
host gets one clear error (local transport, so no testbed is needed)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tests.helpers import run_cli


def topology(root: Path) -> str:
    return f"""\
version: 1
name: checkit
defaults: {{deploy_dir: {root}}}
hosts:
  - name: solo
    address: 127.0.0.1
    transport: local
    hccn_tool: /nonexistent/hccn_tool
    devices: {{0: 10.213.250.1}}
instances:
  - {{name: m, hosts: [solo], command: [sleep, "1"]}}
"""


def test_host_without_a_compiler_gets_a_clear_error(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    os.symlink(python, bindir / "python3")  # the host has python3, a shell, and nothing else
    for tool in ("sh", "cat", "test", "mkdir", "date", "kill"):
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            os.symlink(found, bindir / tool)
    path = tmp_path / "topo.yaml"
    path.write_text(topology(tmp_path / "deploy"))
    monkeypatch.setenv("PATH", str(bindir))
    run = run_cli("check", str(path))
    assert run.code == 1
    assert "solo: link check could not run:" in run.out
    assert "cannot build launcher-linkcheck: no C compiler (cc, gcc or clang) on this host" in run.out


def test_checker_is_built_on_the_host_once_and_reports_a_missing_tool(tmp_path):
    if shutil.which("cc") is None:
        import pytest
        pytest.skip("no C compiler here")
    path = tmp_path / "topo.yaml"
    path.write_text(topology(tmp_path / "deploy"))
    run = run_cli("check", str(path), "--json")
    assert run.code == 1
    doc = run.json()
    reply = doc["checks"]["m@solo"]
    assert reply["exit"] == 2  # the checker's "tool missing" code
    assert "hccn_tool" in reply["stderr"] and "/nonexistent/hccn_tool" in reply["stderr"]
    built = list((tmp_path / "deploy").rglob("native/build/launcher-linkcheck"))
    assert len(built) == 1 and os.access(built[0], os.X_OK)
    stamp = built[0].stat().st_mtime_ns
    assert run_cli("check", str(path)).code == 1
    assert built[0].stat().st_mtime_ns == stamp  # cached: not rebuilt


def test_check_compares_each_hosts_clock_with_the_operators(tmp_path, monkeypatch):
    path = tmp_path / "topo.yaml"
    path.write_text(topology(tmp_path / "deploy"))
    run = run_cli("check", str(path), "--json")
    assert run.json()["clocks"]["solo"].startswith("ok (")
    # the host's clock 1000 s ahead: a `date` on the host's PATH (the OS boundary check reads)
    bindir = tmp_path / "skewed"
    bindir.mkdir()
    real = shutil.which("date")
    (bindir / "date").write_text(f'#!/bin/sh\nexec {real} -d "@$(( $({real} +%s) + 1000 ))" "$@"\n')
    (bindir / "date").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    run = run_cli("check", str(path), "--json")
    assert run.code == 1 and run.json()["ok"] is False
    assert run.json()["clocks"]["solo"].startswith(("SKEWED: +1000.", "SKEWED: +999."))
    table = run_cli("check", str(path)).out
    assert "solo  SKEWED: +" in table and "agents refuse messages beyond ±300 s" in table
