"""The public entry points outlive the package's layout: the console script, `python -m launcher`,
`python -m launcher.demo_rank` (named by earlier docs), and the runtime's bin/ wrappers on hosts."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import __version__
from launcher.deploy.runtime import build_runtime
from tests.helpers import ROOT


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "launcher", "--version"],
    [sys.executable, "-m", "launcher.demo_rank", "--version"],
    [sys.executable, "-m", "launcher.host.demo_rank", "--version"],
])
def test_module_entry_points_answer(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout + proc.stderr


def test_the_console_script_answers():
    script = Path(sys.executable).parent / "launcher"
    if not script.exists():
        script = Path(shutil.which("launcher") or "launcher")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and __version__ in proc.stdout + proc.stderr, proc.stderr


def test_the_host_wrappers_run_the_host_package_from_the_zip(tmp_path):
    """bin/launcher-demo-rank and bin/launcher-agent as a host has them: runtime/<id>/{site.zip,bin/}."""
    rt = build_runtime()
    base = tmp_path / "runtime" / rt.id
    (base / "bin").mkdir(parents=True)
    (base / "site.zip").write_bytes(rt.zip)
    for name, body, mode in rt.files:
        (base / name).write_bytes(body)
        (base / name).chmod(mode)
    proc = subprocess.run([str(base / "bin" / "launcher-demo-rank"), "--version"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent)},
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout + proc.stderr
    proc = subprocess.run([str(base / "bin" / "launcher-agent")], capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent)}, timeout=60)
    assert "usage: python -m launcher.host.agent ROOT" in proc.stderr
    # a rank's cwd with a launcher/ checkout in it does not shadow the runtime's package
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher" / "__init__.py").write_text("raise SystemExit('the cwd shadowed the runtime')\n")
    proc = subprocess.run([str(base / "bin" / "launcher-demo-rank"), "--version"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent)},
                          timeout=60)
    assert proc.returncode == 0 and __version__ in proc.stdout + proc.stderr, proc.stderr
