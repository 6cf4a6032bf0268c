"""hostside as the bootstrap runs it: `state` (on every status) stays cheap to start, and bad usage says so."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT

# what `state` must not import: each costs every status a part of a host's Python start-up
HEAVY = ("shutil", "subprocess", "tarfile", "zipfile", "urllib.request", "typing", "xmlrpc.client",
         "http.client", "concurrent.futures", "argparse")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    # -I -S as the bootstrap (deploy/remote.py): no site, no user paths; the source tree first
    return subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}",
                           *args], capture_output=True, text=True, timeout=60)


def test_state_imports_nothing_heavy(tmp_path):
    proc = _run("from launcher.host import hostside\n"
                "code = hostside.main(['state', sys.argv[1]])\n"
                f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
                "sys.exit(code)", str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    state_line, heavy_line = proc.stdout.strip().splitlines()
    state = json.loads(state_line)
    assert state["root"] == str(tmp_path / "root") and state["supervisord"] is False
    assert heavy_line == "[]"


def test_an_unknown_action_is_a_usage_error_in_json(tmp_path):
    proc = _run("from launcher.host import hostside\nsys.exit(hostside.main(['nope', sys.argv[1]]))", str(tmp_path))
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"].startswith("usage: hostside {state,prepare,switch,")


def test_an_action_that_fails_answers_with_its_error(tmp_path):
    proc = _run("from launcher.host import hostside\nsys.exit(hostside.main(['logs', sys.argv[1], 'x']))",
                str(tmp_path))
    assert proc.returncode == 1
    reply = json.loads(proc.stdout)
    assert set(reply) == {"error", "traceback"}  # the traceback: shown by the operator side under -v
    assert reply["error"] == "logs: ValueError: invalid literal for int() with base 10: 'x'"
    assert reply["traceback"].startswith("Traceback (most recent call last):") and "in act_logs" in reply["traceback"]
    log = (tmp_path / "logs" / "hostside.log").read_text()  # and kept on the host
    assert "logs: Traceback (most recent call last):" in log and "ValueError: invalid literal" in log
