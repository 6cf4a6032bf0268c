"""The package type-checks: mypy over launcher/ (settings in pyproject.toml) reports nothing."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_mypy_reports_no_errors():
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--config-file",
                           str(ROOT / "pyproject.toml"), str(ROOT / "launcher")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
