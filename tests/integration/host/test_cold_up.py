"""A cold `up` (hosts with nothing deployed): upload, switch, supervisord and the first ranks in one
call per host, and a failure on any host leaves every blank host blank. Local transport, real
supervisord, real processes (the hosts of tests/integration/deploy/test_local_deploy.py)."""
from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli, wait_for
from tests.integration.deploy.test_local_deploy import all_running, deployment, status  # noqa: F401 (fixture)

HOSTS = ("node-a", "node-b")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def ours(root: Path) -> list[str]:
    """Live processes of the deployment on one host: supervisord (its config is under ROOT) and
    everything it runs (supervisord gives its children SUPERVISOR_SERVER_URL=unix://ROOT/...)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or _zombie(int(entry)):
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        cmd = _cmdline(int(entry))
        if f"unix://{root}/".encode() in env or f"{root}/current/supervisord.conf" in cmd:
            found.append(f"{entry}: {cmd}")
    return found


def test_a_cold_up_runs_everything_and_supervisord_shows_as_itself(deployment, tmp_path):  # noqa: F811
    path = deployment()
    run = run_cli("up", path)
    assert run.code == 0, run.err
    wait_for(lambda: all_running(path), what="every rank RUNNING")
    for host in HOSTS:
        root = (tmp_path / "deploy" / "itest" / host).resolve()
        pid = int((root / "run" / "supervisord.pid").read_text())
        # started forked from the upload call, it does not show as that call's bootstrap
        assert _cmdline(pid) == f"supervisord -c {root}/current/supervisord.conf"
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "supervisord"
        assert (root / "run").stat().st_mode & 0o777 == 0o700
    rows = status(path)
    assert {r["generation"] for r in rows} == {os.path.basename(os.readlink(
        tmp_path / "deploy" / "itest" / "node-a" / "current"))}
    again = run_cli("up", path)
    assert again.code == 0, again.err
    assert "0 started" in again.out


def test_a_cold_up_that_fails_on_one_host_leaves_every_blank_host_blank(deployment, tmp_path):  # noqa: F811
    path = deployment()
    deploy = (tmp_path / "deploy").resolve()
    (deploy / "itest").mkdir()
    obstacle = deploy / "itest" / "node-b"
    obstacle.write_text("not a directory")  # node-b's upload fails; node-a's succeeds and starts
    run = run_cli("up", path)
    assert run.code == 1
    assert "node-b" in run.err and "upload failed" in run.err
    root_a = deploy / "itest" / "node-a"
    assert not os.path.lexists(root_a / "current")
    assert not (root_a / "run" / "supervisor.sock").exists()
    wait_for(lambda: not ours(root_a), timeout=30, what="nothing of the deployment left running on node-a")
    assert all(r["state"] == "ABSENT" and r["generation"] is None for r in status(path))

    obstacle.unlink()
    run = run_cli("up", path)
    assert run.code == 0, run.err
    wait_for(lambda: all_running(path), what="every rank RUNNING after the host was fixed")


def test_a_supervisord_that_cannot_start_fails_the_call_in_its_own_words(tmp_path):
    """The forked supervisord's complaint (before it daemonizes) reaches the caller; nothing is left running."""
    import subprocess
    import sys
    root = tmp_path / "root"
    (root / "gens" / "g").mkdir(parents=True)
    (root / "run").mkdir()
    (root / "gens" / "g" / "supervisord.conf").write_text(
        f"[supervisord]\nlogfile={tmp_path}/no-such-dir/supervisord.log\npidfile={root}/run/supervisord.pid\n")
    (root / "current").symlink_to("gens/g")
    code = ("import sys\nfrom launcher.host import supervisord\n"
            "if supervisord.systemd_usable():\n    sys.exit(3)\n"
            "try:\n    supervisord.start_supervisord(sys.argv[1])\n"
            "except RuntimeError as exc:\n    print(exc)\n    sys.exit(1)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60)
    if proc.returncode == 3:
        import pytest
        pytest.skip("systemd runs here: supervisord would be its unit's")
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("supervisord failed to start: Error: ")
    assert "no-such-dir" in proc.stdout
    assert not (root / "run" / "supervisord.pid").exists()
