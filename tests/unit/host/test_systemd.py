"""The systemd unit template is valid for systemd itself (systemd-analyze verify)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

UNIT = ROOT / "launcher" / "host" / "systemd" / "ascend-launcher@.service"  # the one shipped to hosts


def test_the_unit_has_one_source_the_shipped_file():
    # systemd/ (the design card's folder, where operators look) points at the file the runtime
    # ships and these tests check: an edit to either is an edit to both
    top = ROOT / "systemd" / UNIT.name
    assert top.is_symlink() and top.resolve() == UNIT.resolve()
    assert [p.name for p in (ROOT / "systemd").iterdir()] == [UNIT.name]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_template_verifies(tmp_path: Path):
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    shutil.copy(UNIT, unit_dir / UNIT.name)
    instance = "ascend-launcher@var-lib-ascend\\x2dlauncher-demo-node0.service"
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_dir / instance)],
                          capture_output=True, text=True, timeout=60,
                          env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                if UNIT.name.split("@")[0] in ln and "ascend" in ln]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_unit_runs_supervisord_in_the_foreground_on_the_deployment_root():
    text = UNIT.read_text()
    start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert start.startswith("ExecStart=/bin/sh -c ")
    assert 'PYTHONPATH="$$rt/site.zip" exec /usr/bin/python3 -m launcher.host.supervisord --nodaemon ' \
           '-c "%f/current/supervisord.conf"' in start
    assert "LimitMEMLOCK=infinity" in text
