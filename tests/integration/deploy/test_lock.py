"""The deployment lock's shell commands for real (sh, mkdir, mv on this machine, local transport):
a lock is never seen half-made, and a lock command that fails is an error, not a stale lock."""
from __future__ import annotations

import json
import subprocess

import pytest

from launcher.core.errors import LauncherError
from launcher.core.model import Host, Ssh
from launcher.deploy.lock import ACQUIRE, Locked, deployment_lock
from launcher.deploy.remote import HostClient
from launcher.deploy.runtime import Runtime
from launcher.deploy.transport import LocalTransport
from tests.helpers import wait_for


def client(root) -> HostClient:
    host = Host(name="node-a", address="127.0.0.1", server_id="127.0.0.1", container_ip=None,
                transport="local", ssh=Ssh(), deploy_dir=str(root), devices=())
    return HostClient(LocalTransport(host), str(root), Runtime(id="test", site=(), files=()))


def test_a_lock_being_taken_is_never_seen_without_its_holder(tmp_path):
    root = tmp_path / "root"
    # the first `up` is still writing its holder (its stdin is still open) ...
    first = subprocess.Popen(["sh", "-c", ACQUIRE, "sh", str(root), "first:1:1.0"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdin is not None
    first.stdin.write(b'{"id": "first:1:1.0", "command": "up", "user": "alice"')
    first.stdin.flush()
    wait_for(lambda: [p for p in root.glob("state/*/holder.json") if p.read_bytes()], timeout=30,
             what="the first holder half written")
    warnings: list[str] = []
    # ... a second one meanwhile: it must not find a holder-less lock and take it as stale
    with deployment_lock(client(root), "up", warn=warnings.append) as mine:
        assert warnings == []
        assert json.loads((root / "state" / "lock.d" / "holder.json").read_text())["id"] == mine["id"]
        out, err = first.communicate(b', "machine": "m", "pid": 1, "since": 1, "expires": 1e12}', timeout=30)
        lines = out.decode().splitlines()
        assert first.returncode == 0, err
        assert lines[0] == "held" and json.loads(lines[1])["id"] == mine["id"]  # the first one lost: one holder
        assert json.loads((root / "state" / "lock.d" / "holder.json").read_text())["id"] == mine["id"]
    assert sorted(p.name for p in (root / "state").iterdir()) == []  # released, no leftovers


def test_a_held_lock_names_its_holder(tmp_path):
    root = tmp_path / "root"
    with deployment_lock(client(root), "up", warn=print):
        with pytest.raises(Locked, match=r"deployment is busy: `up` by \S+ on \S+ \(pid \d+"):
            with deployment_lock(client(root), "down", warn=print):
                pass


def test_a_lock_that_cannot_be_made_is_an_error_not_a_stale_lock(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the deployment's root should be")
    warnings: list[str] = []
    with pytest.raises(LauncherError) as err:
        with deployment_lock(client(blocker), "up", warn=warnings.append):
            pass
    assert not isinstance(err.value, Locked)
    assert "host node-a: cannot take the deployment lock (exit code 3): mkdir:" in str(err.value)
    assert warnings == []  # no "taking over a stale lock"
    assert blocker.read_text().startswith("a file")  # nothing touched
