"""The agents never restart a gang across hosts on different generations (issue 11, point 2).

A failed `up` whose rollback cannot reach a host leaves that host on the new generation and
the others on the old one. Made here for real: both hosts `up` to a second generation, then
node-a alone is switched back to the first one with the host action itself (what a rollback
that reached only node-a does). A rank of the gang then dies: restarted, the gang would be one
HCCL world of two configs, so its leader holds it, `status` says why and exits 1, until an
`up` makes the hosts agree and the gang runs again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import run_cli, wait_for
from tests.integration.deploy.test_local_deploy import all_running, deployment, pids, status  # noqa: F401

HOLD = "hosts on different generations"


def switch_back(root: Path, generation: str) -> None:
    """Run the host action `switch` on one host's root, as a rollback would."""
    runtime = os.readlink(root / "runtime" / "current")
    env = {**os.environ, "PYTHONPATH": str(root / "runtime" / "current" / "site.zip")}
    out = subprocess.run([sys.executable, "-m", "launcher.host.hostside", "switch", str(root), generation, runtime],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["generation"] == generation


def test_a_gang_across_hosts_on_different_generations_is_held_until_up_makes_them_agree(deployment, tmp_path):
    first = deployment()
    assert run_cli("up", first).code == 0
    wait_for(lambda: all_running(first), what="all ranks RUNNING")
    gen1 = status(first)[0]["generation"]
    second = deployment(model_env="b")
    assert run_cli("up", second).code == 0
    wait_for(lambda: all_running(second), what="RUNNING on the second generation")
    gen2 = status(second)[0]["generation"]
    assert gen2 != gen1
    switch_back(tmp_path / "deploy" / "itest" / "node-a", gen1)

    before = pids(second, "model")
    os.kill(before[1], signal.SIGKILL)  # rank 1 lives on node-b (gen2); the leader is node-a (gen1)

    def held() -> list[dict]:
        rows = [r for r in status(second) if r["instance"] == "model"]
        return rows if all(HOLD in r["waiting_on"] for r in rows) else []
    rows = wait_for(held, what="the gang held, status saying why")
    assert any(f"node-a on {gen1}" in d and f"node-b on {gen2}" in d for d in rows[0]["drift"]), rows[0]["drift"]
    assert pids(second, "model")[0] == before[0]  # rank 0 was not restarted on the other generation
    assert all(r["restarts"] == 0 for r in rows)
    table = run_cli("status", second)
    assert table.code == 1 and HOLD in table.out

    again = run_cli("up", second)
    assert again.code == 0, again.err
    wait_for(lambda: all_running(second), what="the gang runs again once the hosts agree")
    assert {r["generation"] for r in status(second)} == {gen2}
    assert not any(r["waiting_on"] for r in status(second))
    assert run_cli("status", second).code == 0
