"""Hosts deployed by launcher 0.1 (the flat layout: launcher/hostside.py, launcher.agent) are read
and upgraded by this launcher's next `up`: same rank PIDs, the agent restarted on the new runtime,
and the gang restart still works afterwards. The old launcher is the real one, from git history."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, launcher_0_1, run_cli, wait_for


@pytest.fixture
def old_launcher(tmp_path):
    tree = launcher_0_1(tmp_path / "launcher-0.1")
    assert (tree / "launcher" / "hostside.py").exists()
    return tree


def _topology(tmp_path: Path, deploy: Path) -> Path:
    text = (ROOT / "configs" / "demo-local.yaml").read_text()
    text = (text.replace("/tmp/ascend-launcher-demo", str(deploy))
            .replace("name: demo-local", "name: upgrade").replace("29610", "29660").replace("18610", "18660"))
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    return path


def _old(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    # cwd: not the old tree, whose launcher/ would shadow the runtime's for every `python3 -m`
    # that a 0.1 supervisord (which keeps its starter's cwd) runs
    return subprocess.run([sys.executable, "-m", "launcher", *argv], capture_output=True, text=True,
                          env=env, cwd=tree.parent, timeout=180)


def _rows(path: Path) -> dict[int, dict]:
    run = run_cli("status", str(path), "--json")
    return {r["rank"]: r for r in json.loads(run.out)}


def _agents(deploy: Path) -> dict[str, str] | None:
    """host -> the agent's command line, from /proc (what really runs, not what status says);
    None while an agent is (re)starting."""
    out = {}
    for host in ("node-a", "node-b"):
        try:
            pid = (deploy / "upgrade" / host / "state" / "agent.pid").read_text().strip()
            out[host] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
    return out


def test_up_upgrades_hosts_deployed_by_the_flat_layout(tmp_path, old_launcher):
    # short: supervisord's unix socket lives under it (AF_UNIX paths end at 108 bytes)
    deploy = Path(tempfile.mkdtemp(prefix="lu-", dir="/tmp"))
    path = _topology(tmp_path, deploy)
    try:
        proc = _old(old_launcher, "up", str(path))
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: (a := _agents(deploy)) and all("-m launcher.agent " in c for c in a.values()),
                 what="launcher 0.1's agents")
        before = wait_for(lambda: (r := _rows(path)) and all(x["state"] == "RUNNING" for x in r.values()) and r,
                          what="0.1's ranks RUNNING, as this launcher's status reads them")
        run = run_cli("up", str(path))
        assert run.code == 0, run.err
        after = _rows(path)
        assert {k: r["pid"] for k, r in after.items()} == {k: r["pid"] for k, r in before.items()}
        agents = wait_for(lambda: (a := _agents(deploy)) and all("-m launcher.host.agent " in c for c in a.values())
                          and a, what="agents of the new runtime")
        assert len(agents) == 2
        # the new agent keeps its gang: a rank killed is restarted with the whole instance
        os.kill(after[3]["pid"], 9)
        again = wait_for(lambda: (r := _rows(path)) and all(x["state"] == "RUNNING" and x["restarts"] == 1
                                                             for x in r.values()) and r,
                         what="the gang restarted by the new agent")
        assert not set(r["pid"] for r in again.values()) & set(r["pid"] for r in after.values())
    finally:
        down = run_cli("down", str(path), "--purge")
        assert down.code == 0, down.err
        shutil.rmtree(deploy, ignore_errors=True)
