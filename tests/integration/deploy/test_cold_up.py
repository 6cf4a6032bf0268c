"""A cold `up` without a state round: when the lock host has nothing of the deployment, every host
is sent its upload at once with `--if-blank` (deploy/uploads.py); a host that has something
touches nothing, and `up` then reads every host's state and deploys as usual.

Real supervisord and processes, local transport, two "hosts" (tests/integration/deploy/test_local_deploy.py).
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from tests.helpers import run_cli, wait_for
from tests.integration.deploy.test_local_deploy import _alive, all_running, deployment, status  # noqa: F401

GUESS = "node-a (the lock host) has nothing of itest: uploading to 2 hosts, each only if it has nothing either"


def test_a_first_up_and_an_up_after_purge_upload_without_reading_state_first(deployment):
    path = deployment()
    first = run_cli("up", path)
    assert first.code == 0, first.err
    assert GUESS in first.err and "reached 2 hosts" not in first.err
    wait_for(lambda: all_running(path), what="all ranks RUNNING")

    again = run_cli("up", path)  # the lock host has a deployment now: the state round, nothing restarted
    assert again.code == 0, again.err
    assert GUESS not in again.err and "reached 2 hosts" in again.err
    assert "unchanged, left running: model, other" in again.err

    assert run_cli("down", path, "--purge").code == 0
    after = run_cli("up", path)
    assert after.code == 0, after.err
    assert GUESS in after.err
    wait_for(lambda: all_running(path), what="all ranks RUNNING after down --purge and up")


def test_a_wrong_guess_changes_nothing_on_the_host_that_had_a_deployment(deployment, tmp_path):
    path = deployment()
    assert run_cli("up", path).code == 0
    wait_for(lambda: all_running(path), what="all ranks RUNNING")
    hosts = tmp_path / "deploy" / "itest"
    key_b = (hosts / "node-b" / "state" / "secret").read_bytes()
    gens_b = sorted(p.name for p in (hosts / "node-b" / "gens").iterdir())

    # node-a is reinstalled: its supervisord (and what it ran) gone, its files too, but for the
    # fencing mark and the lock's counter, which `down --purge` keeps as well
    a = hosts / "node-a"
    pid = int((a / "run" / "supervisord.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), timeout=60, what="node-a's supervisord gone")
    for p in a.iterdir():
        if p.name != "state":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in (a / "state").iterdir():
        if p.name not in ("fence", "lock.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    run = run_cli("up", path)
    assert run.code == 0, run.err
    assert GUESS in run.err
    assert "node-b already has part of this deployment (untouched); reading every host's state first" in run.err
    assert "reached 2 hosts" in run.err
    # node-b kept its key (node-a was given it, as any host joining a deployment is), and no generation
    # was added there by the guess
    assert (hosts / "node-b" / "state" / "secret").read_bytes() == key_b
    assert (a / "state" / "secret").read_bytes() == key_b
    assert sorted(p.name for p in (hosts / "node-b" / "gens").iterdir()) == gens_b
    wait_for(lambda: all_running(path), what="both hosts RUNNING again")
    assert {r["host"] for r in status(path)} == {"node-a", "node-b"}


def test_the_guess_fails_cleanly_when_an_upload_fails(deployment, tmp_path):
    from tests.integration.deploy.test_local_deploy import unwritable
    path = deployment()
    b = Path(tmp_path / "deploy" / "itest" / "node-b")
    b.mkdir(parents=True)
    with unwritable(b):
        run = run_cli("up", path)
    assert run.code == 1
    assert GUESS in run.err and "node-b" in run.err
    assert "the blank hosts it had switched were put back to nothing" in run.err
    a = tmp_path / "deploy" / "itest" / "node-a"
    assert not (a / "current").exists() and not (a / "run" / "supervisor.sock").exists()
    assert all(r["state"] == "ABSENT" for r in status(path))
