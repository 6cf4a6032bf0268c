"""`up` after a change, on real supervisord (local transport): rolling vs all, dependencies that
are not ready, Ctrl-C at a safe point, and the drift `status` reports afterwards."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import run_cli, wait_for
from tests.integration.deploy.test_rolling import roll, rows  # noqa: F401 (roll is a fixture)


def bump(path: str, version: str, only: str | None = None) -> None:
    """Give every instance (or only ``only``) the env V=version: a change that restarts it."""
    text = Path(path).read_text()
    head, insts = text.split("instances:\n", 1)
    out = []
    for block in insts.split("  - name: ")[1:]:
        name = block.split("\n", 1)[0]
        block = "\n".join(ln for ln in block.split("\n") if not ln.startswith("    env:"))
        if only in (None, name):
            block = block.replace("\n    devices:", f"\n    env: {{V: '{version}'}}\n    devices:", 1)
        out.append(block)
    Path(path).write_text(head + "instances:\n" + "".join("  - name: " + b for b in out))


def up_running(path: str) -> dict[str, dict]:
    run = run_cli("up", path)
    assert run.code == 0, run.err
    return wait_for(lambda: all_running(path), what="all RUNNING")


def all_running(path: str) -> dict[str, dict] | None:
    now = rows(path)
    return now if all(r["state"] == "RUNNING" for r in now.values()) else None


def test_rolling_strategy_restarts_one_at_a_time_each_ready(roll):
    path = roll()
    before = up_running(path)
    bump(path, "2")
    run = run_cli("up", path)  # auto: the instances have probes, so they roll
    assert run.code == 0, run.err
    assert "rolling restart of a, b, c: at most 1 down" in run.err
    after = rows(path)
    assert all(after[k]["pid"] != before[k]["pid"] for k in before)
    # each became ready before the next went down: a has been up longest, c shortest
    assert after["a"]["uptime"] >= after["b"]["uptime"] >= after["c"]["uptime"]
    assert run.err.index("a is ready") < run.err.index("restarted b") < run.err.index("b is ready") \
        < run.err.index("restarted c")


def test_all_strategy_restarts_without_waiting_in_between(roll):
    path = roll()
    before = up_running(path)
    bump(path, "2")
    run = run_cli("up", path, "--strategy", "all")
    assert run.code == 0, run.err
    assert "rolling" not in run.err
    # all three in one go; readiness is checked only after (up ends when they are ready)
    restarted = next(ln for ln in run.err.splitlines() if "[4/4] restarted" in ln)
    assert all(f"{n} (skew" in restarted for n in "abc")
    assert run.err.index(restarted) < run.err.index("is ready")
    after = wait_for(lambda: all_running(path), what="all RUNNING")
    assert all(after[k]["pid"] != before[k]["pid"] for k in before)


def test_rolling_update_stops_at_an_instance_that_never_gets_ready(roll):
    path = roll()
    before = up_running(path)
    # b now serves on another port than its probe asks: it never gets ready; c changes too
    Path(path).write_text(Path(path).read_text().replace("--health-port, '18720'", "--health-port, '18729'"))
    bump(path, "2", only="c")
    run = run_cli("up", path, "--ready-timeout", "3")
    assert run.code == 1
    assert "rolling update stopped: b did not become ready" in run.err
    assert "untouched (still on their previous config): c" in run.err
    after = rows(path)
    assert after["c"]["pid"] == before["c"]["pid"]
    assert after["c"]["stale"] and after["c"]["state"] == "RUNNING"


def test_ctrl_c_during_a_rolling_up_stops_at_a_safe_point_and_status_shows_it(roll):
    path = roll()
    before = up_running(path)
    bump(path, "2")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "up", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:  # Ctrl-C once the first instance was restarted, while it gets ready
        seen.append(line)
        if "restarted a (skew" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=120)[1]
    err = "".join(seen) + rest
    assert proc.returncode == 1, err
    assert "interrupted: every host is on generation" in err and "restarted: a;" in err
    assert "`launcher up` again finishes it" in err
    after = rows(path)
    # one whole generation: the new one is current everywhere, a runs it, b and c still run the old
    # config and say so; nothing is half started
    assert all(r["state"] == "RUNNING" for r in after.values())
    assert after["a"]["pid"] != before["a"]["pid"] and not after["a"]["stale"]
    assert {k for k, r in after.items() if r["stale"]} == {"b", "c"}
    assert after["b"]["pid"] == before["b"]["pid"]
    status = run_cli("status", path)
    assert status.code == 1 and "RUNNING (old config)" in status.out
    assert "b: runs the config of generation" in status.out
    # diff and up see what is left to do; up finishes it
    assert "restart (runs an older config)" in run_cli("diff", path).out
    run = run_cli("up", path)
    assert run.code == 0 and "unchanged, left running: a" in run.err
    assert run_cli("status", path).code == 0


def test_a_dependency_that_is_not_ready_holds_its_dependents_and_status_says_so(roll):
    path = Path(roll())
    path.write_text(path.read_text().replace("  - name: b\n", "  - name: b\n    depends_on: [a]\n"))
    before = up_running(str(path))
    os.kill(before["a"]["pid"], signal.SIGSTOP)  # a hangs: its probe times out, it is still "RUNNING"
    try:
        bump(str(path), "2", only="b")
        run = run_cli("up", str(path), "--ready-timeout", "2")
        assert run.code == 1
        assert "a did not become ready" in run.err and "not started, as they wait for it: b" in run.err
        after = rows(str(path))
        assert after["b"]["pid"] == before["b"]["pid"]  # what runs keeps running
        assert after["b"]["waiting_on"] == ["a"]
        status = run_cli("status", str(path))
        assert "b: waits for a: a not ready:" in status.out
    finally:
        os.kill(before["a"]["pid"], signal.SIGCONT)
    run = run_cli("up", str(path))
    assert run.code == 0, run.err
    after = rows(str(path))
    assert after["b"]["pid"] != before["b"]["pid"] and after["b"]["waiting_on"] == []


def test_status_shows_programs_not_in_the_plan_and_a_host_on_another_generation(roll):
    path = Path(roll())
    up_running(str(path))
    text = path.read_text()
    path.write_text(text[:text.index("  - name: c\n")])  # c removed from the topology, not applied
    run = run_cli("status", str(path), "--json")
    assert run.code == 1
    got = {r["instance"]: r for r in run.json()}
    assert got["c"]["in_plan"] is False and got["c"]["state"] == "RUNNING"
    assert any(d.startswith("host runs generation") for d in got["a"]["drift"])
    table = run_cli("status", str(path)).out
    assert "RUNNING (not in plan)" in table and "drift (the topology wants generation" in table
    run = run_cli("up", str(path))  # applying it removes c
    assert run.code == 0 and "removed c" in run.err
    assert run_cli("status", str(path)).code == 0


def agent_log(path: Path) -> str:
    """The solo host's agent log (what it restarted and why), for a failure message."""
    deploy = next(ln.split("deploy_dir: ", 1)[1].split(",")[0] for ln in path.read_text().splitlines()
                  if "deploy_dir: " in ln)
    return (Path(deploy) / "roll" / "solo" / "logs" / "launcher-agent.log").read_text()


def test_a_gang_restart_waits_until_its_dependency_is_back(roll):
    """The agent, not only `up`: b's rank dies while a (which b depends on) hangs; b is not
    started again until a answers its probe, and meanwhile status says b waits for a."""
    path = Path(roll())
    path.write_text(path.read_text().replace("  - name: b\n", "  - name: b\n    depends_on: [a]\n"))
    before = up_running(str(path))
    os.kill(before["a"]["pid"], signal.SIGSTOP)
    try:
        os.kill(before["b"]["pid"], signal.SIGKILL)
        waiting = wait_for(lambda: (r := rows(str(path))["b"])["state"] == "WAITING" and r, what="b WAITING")
        assert waiting["waiting_on"] == ["a"] and waiting["pid"] is None
        assert "WAITING (a)" in run_cli("status", str(path)).out
    finally:
        os.kill(before["a"]["pid"], signal.SIGCONT)
    back = wait_for(lambda: (r := rows(str(path))["b"])["state"] == "RUNNING" and r, what="b RUNNING again")
    assert back["pid"] != before["b"]["pid"] and back["waiting_on"] == []
    assert back["restarts"] == 1, agent_log(path)


def test_up_ends_when_what_it_started_is_ready_and_says_which_never_was(roll):
    path = roll(probe_b=18799)  # b serves on 18720, its probe asks 18799: never ready
    run = run_cli("up", path, "--ready-timeout", "3")
    assert run.code == 1
    assert "a is ready" in run.err and "c is ready" in run.err
    assert "error: b was started but did not become ready (solo: http http://127.0.0.1:18799/health:" in run.err


def test_exit_78_is_a_configuration_error_the_agent_does_not_retry(roll):
    path = Path(roll())
    path.write_text(path.read_text().replace(
        "command: [launcher-demo-rank, --health-port, '18730']", "command: [sh, -c, 'sleep 1; exit 78']"))
    run_cli("up", str(path), "--ready-timeout", "1")
    failed = wait_for(lambda: (r := rows(str(path))["c"])["state"] == "FAILED" and r, what="c FAILED")
    assert failed["restarts"] == 0
    assert "a configuration error (exit 78), not restarted" in failed["reason"]


def test_ctrl_c_during_a_rolling_restart_stops_between_instances(roll):
    path = roll()
    before = up_running(path)
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "restart", path, "--rolling"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "restarted a;" in line:  # a is down or coming up: the roll must finish it, then stop
            proc.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + proc.communicate(timeout=120)[1]
    assert proc.returncode == 1, err
    assert "interrupted: restarted and ready: a; not restarted: b, c" in err
    after = all_running(path)
    assert after is not None, "a gang was left half started"
    assert after["a"]["pid"] != before["a"]["pid"]
    assert after["b"]["pid"] == before["b"]["pid"] and after["c"]["pid"] == before["c"]["pid"]


def test_a_rank_that_ignores_sigterm_is_killed_and_the_restart_succeeds(roll):
    """supervisord waits stopwaitsecs (30 s), then SIGKILLs: the stop must outlast that."""
    path = Path(roll())
    path.write_text(path.read_text().replace(
        "command: [launcher-demo-rank, --health-port, '18730']", "command: [sh, -c, 'trap \"\" TERM; sleep 1000']")
        .replace("    probe: {http: ':18730/health', timeout: 2, period: 0.2}\n", ""))  # it serves nothing
    run = run_cli("up", str(path))
    assert run.code == 0, run.err
    pid = wait_for(lambda: rows(str(path))["c"]["pid"], what="c running")
    run = run_cli("restart", str(path), "--instance", "c")
    assert run.code == 0, run.err
    after = wait_for(lambda: (r := rows(str(path))["c"])["state"] == "RUNNING" and r, what="c back")
    assert after["pid"] != pid


def test_down_after_a_launcher_upgrade_stops_what_the_older_version_started(roll):
    """The hosts run what another launcher version deployed (its runtime, not ours): `down` ships
    this version's runtime and stops everything, instead of reporting success for nothing."""
    from launcher.deploy.runtime import build_runtime
    path = Path(roll())
    pids = [r["pid"] for r in up_running(str(path)).values()]
    deploy = next(ln.split("deploy_dir: ")[1].split(",")[0] for ln in path.read_text().splitlines()
                  if "deploy_dir" in ln)
    runtimes = Path(deploy) / "roll" / "solo" / "runtime"
    rid = build_runtime().id
    (runtimes / rid).rename(runtimes / "an-older-version")
    (runtimes / "current").unlink()
    (runtimes / "current").symlink_to("an-older-version")
    run = run_cli("down", str(path))
    assert run.code == 0, run.err
    for pid in pids:
        assert wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or
                        Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z",
                        timeout=30, what=f"rank {pid} gone")


def _agent_pid(deploy: Path) -> int:
    return int((deploy / "state" / "agent.pid").read_text())


def test_after_a_launcher_upgrade_up_leaves_the_ranks_and_restarts_the_agent_on_the_new_runtime(roll):
    """A new launcher version with the same topology: `up` ships its runtime and switches to it;
    no rank restarts (their config did not change), the agent restarts on the new code, and every
    process imports from its own runtime's zip, never through runtime/current."""
    from launcher.deploy.runtime import build_runtime
    path = Path(roll())
    ranks = {k: r["pid"] for k, r in up_running(str(path)).items()}
    deploy_dir = next(ln.split("deploy_dir: ")[1].split(",")[0] for ln in path.read_text().splitlines()
                      if "deploy_dir" in ln)
    root = Path(deploy_dir) / "roll" / "solo"
    runtimes = root / "runtime"
    rid = build_runtime().id
    (runtimes / rid).rename(runtimes / "an-older-version")
    (runtimes / "current").unlink()
    (runtimes / "current").symlink_to("an-older-version")
    # the agent that runs now was started from the runtime now called an-older-version
    old_agent = wait_for(lambda: _agent_pid(root), what="agent pid")
    run = run_cli("up", str(path))
    assert run.code == 0, run.err
    assert os.readlink(runtimes / "current") == rid
    new_agent = wait_for(lambda: (p := _agent_pid(root)) != old_agent and Path(f"/proc/{p}").exists() and p,
                         what="a new agent")
    environ = dict(kv.split("=", 1) for kv in Path(f"/proc/{new_agent}/environ").read_text().split("\0") if "=" in kv)
    assert environ["PYTHONPATH"].split(":")[0] == f"{runtimes.resolve()}/{rid}/site.zip"
    assert {k: r["pid"] for k, r in all_running(str(path)).items()} == ranks
