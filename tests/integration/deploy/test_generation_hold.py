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


def hostside(root: Path, action: str, *args: str) -> dict:
    """Run a host action on one host's root with its runtime, as the operator side does over SSH."""
    env = {**os.environ, "PYTHONPATH": str(root / "runtime" / "current" / "site.zip")}
    out = subprocess.run([sys.executable, "-m", "launcher.host.hostside", action, str(root), *args],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def switch_back(root: Path, generation: str) -> None:
    """Run the host action `switch` on one host's root, as a rollback would."""
    runtime = os.readlink(root / "runtime" / "current")
    assert hostside(root, "switch", generation, runtime)["generation"] == generation


def test_restore_on_the_reachable_host_has_the_agents_restart_the_whole_gang(deployment, tmp_path):
    """Point 3's host side: a gang start answered on node-a and was lost on node-b (its sshd
    died): the operator side calls `restore` on node-a alone, and the agents, over their port,
    restart the gang on both hosts: one world again, nothing left down."""
    path = deployment()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="all ranks RUNNING")
    before = pids(path, "model")
    assert hostside(tmp_path / "deploy" / "itest" / "node-a", "restore", "model") == {"restoring": ["model"]}

    def whole_again() -> dict[int, int]:
        now = pids(path, "model")
        fresh = all(now.get(r) and now[r] != before[r] for r in before)
        return now if fresh and all_running(path) else {}
    now = wait_for(whole_again, what="both ranks restarted by the agents")
    assert all(os.kill(pid, 0) is None for pid in now.values())  # real processes, alive
    desired = json.loads((tmp_path / "deploy" / "itest" / "node-b" / "state" / "desired.json").read_text())
    assert desired["model"] is True


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


def with_dependency(path: str, flag: Path) -> str:
    """model depends on other, whose probe passes while ``flag`` exists (a command probe, which
    the leader's agent runs before a gang restart of model)."""
    text = Path(path).read_text()
    text = text.replace("  - name: model\n", "  - name: model\n    depends_on: [other]\n")
    text = text.replace("  - name: other\n", f"  - name: other\n    probe: {{command: [test, -e, '{flag}']}}\n")
    Path(path).write_text(text)
    return path


def test_a_switch_during_the_dependency_wait_holds_the_gang_right_before_its_start(deployment, tmp_path):
    """The generations are compared again right before the start, not only before the stop: a
    host switched back while the restart waited for a dependency holds the gang (before: started
    as one world of two configs)."""
    flag = tmp_path / "other-ready"
    flag.touch()
    first = with_dependency(deployment(), flag)
    assert run_cli("up", first).code == 0
    wait_for(lambda: all_running(first), what="all ranks RUNNING")
    gen1 = status(first)[0]["generation"]
    second = with_dependency(deployment(model_env="b"), flag)
    assert run_cli("up", second).code == 0
    wait_for(lambda: all_running(second), what="RUNNING on the second generation")
    before = pids(second, "model")
    leader = tmp_path / "deploy" / "itest" / "node-a"
    flag.unlink()  # other stops passing its probe: model's restart will wait for it
    os.kill(before[1], signal.SIGKILL)
    wait_for(lambda: "gang model: waits for other before it starts again" in
             (leader / "logs" / "launcher-agent.log").read_text(), what="the restart waiting for other")
    switch_back(leader, gen1)  # meanwhile node-a goes back (a rollback that reached only node-a)
    flag.touch()

    def held() -> list[dict]:
        rows = [r for r in status(second) if r["instance"] == "model"]
        return rows if all(HOLD in r["waiting_on"] for r in rows) else []
    rows = wait_for(held, what="the gang held right before its start")
    assert any(f"node-a on {gen1}" in d and "node-b" in d for d in rows[0]["drift"]), rows[0]["drift"]
    assert all(r["pid"] is None for r in rows), rows  # started nowhere: not one world of two configs
    assert all(r["restarts"] == 0 for r in rows)
    record = json.loads((leader / "state" / "gang.json").read_text())["model"]
    assert "intent" not in record  # held, not resumed by a later agent
