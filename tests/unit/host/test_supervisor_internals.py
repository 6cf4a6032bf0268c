"""The supervisor the host side patches is one it was tested against: pinned, and with every
internal the patches use (wakeup.py, supervisord.py) present, or supervisord refuses to start."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement

from launcher.host.wakeup import INTERNALS, missing_internals
from tests.helpers import ROOT


def test_the_installed_supervisor_is_in_the_pinned_range_and_has_what_the_patches_use():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in deps if Requirement(d).name == "supervisor")
    assert pin.specifier.contains(version("supervisor")), (pin, version("supervisor"))
    assert any(s.operator == "<" for s in pin.specifier), f"{pin}: no upper bound (the patches use internals)"
    assert missing_internals() == []


def test_a_supervisor_without_them_is_refused_at_start_naming_what_lacks(tmp_path):
    """A supervisor whose internals moved: supervisord exits saying which, before it runs half-patched."""
    fake = tmp_path / "supervisor"
    (fake / "medusa").mkdir(parents=True)
    for mod in ["__init__", "options", "events", "poller", "medusa/__init__", "medusa/asyncore_25"]:
        (fake / f"{mod}.py").write_text("")
    (fake / "supervisord.py").write_text("class Supervisor:\n    pass\n\ndef main(argv):\n    raise SystemExit(0)\n")
    proc = subprocess.run([sys.executable, "-c", "import sys; from launcher.host.supervisord import main; main([])"],
                          cwd=ROOT, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"}, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "supervisor.supervisord.Supervisor.runforever" in proc.stderr and "pins" in proc.stderr
    assert len(INTERNALS) == 5
