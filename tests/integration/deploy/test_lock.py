"""The deployment lock and its fencing token for real (the lock script under python3 on this
machine, local transport): one holder at a time, a token that only grows, a holder told apart
from another container's process of the same hostname and pid, a renewal that finds the lock
taken stopping the command, and a host refusing an older token before it touches anything."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from launcher.core.errors import LauncherError
from launcher.core.model import Host, Ssh
from launcher.deploy import lock
from launcher.deploy.fencing import Fence, LeaseLost
from launcher.deploy.lock import LOCK_SCRIPT, Locked, deployment_lock
from launcher.deploy.remote import HostClient
from launcher.deploy.runtime import Runtime
from launcher.deploy.transport import LocalTransport
from tests.helpers import wait_for


def client(root) -> HostClient:
    host = Host(name="node-a", address="127.0.0.1", server_id="127.0.0.1", container_ip=None,
                transport="local", ssh=Ssh(), deploy_dir=str(root), devices=())
    return HostClient(LocalTransport(host), str(root), Runtime(id="test", site=(), files=()))


def record(root) -> dict:
    return json.loads((root / "state" / "lock.json").read_text())


def hold(root, **holder) -> None:
    """A lock record as another operator's command left it (the lock host's clock: this machine's)."""
    (root / "state").mkdir(parents=True, exist_ok=True)
    base = {"id": "other", "user": "alice", "machine": socket.gethostname(), "pid": os.getpid(),
            "command": "up", "since": time.time()}
    expires = holder.pop("expires", time.time() + 120)
    (root / "state" / "lock.json").write_text(json.dumps({"token": 7, "holder": {**base, **holder},
                                                          "expires": expires}))


def test_concurrent_acquisitions_make_one_holder_and_tokens_only_grow(tmp_path):
    root = tmp_path / "root"

    def acquire(i: int) -> dict:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", LOCK_SCRIPT, str(root), "acquire", f"h{i}", "120"],
                             input=json.dumps({"id": f"h{i}", "command": "up"}).encode(), capture_output=True,
                             check=True)
        return json.loads(out.stdout)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(acquire, range(8)))
    winners = [r for r in replies if "acquired" in r]
    assert len(winners) == 1 and winners[0]["acquired"] == 1, replies
    assert all(r["held"]["id"] == record(root)["holder"]["id"] for r in replies if "held" in r)
    # the host, not the operator, wrote when the lease ends: on its own clock
    assert 0 < record(root)["expires"] - record(root)["holder"]["since"] <= 120
    subprocess.run([sys.executable, "-I", "-S", "-c", LOCK_SCRIPT, str(root), "release",
                    record(root)["holder"]["id"], "1"], check=True, capture_output=True)
    assert record(root) == {"token": 1}  # released; the counter stays
    with deployment_lock(client(root), "up") as fence:
        assert fence.token == 2 and not fence.took_over
    assert record(root) == {"token": 2}


def test_a_held_lock_names_its_holder(tmp_path):
    root = tmp_path / "root"
    with deployment_lock(client(root), "up", warn=print):
        with pytest.raises(Locked, match=r"deployment is busy: `up` by \S+ on \S+ \(pid \d+"):
            with deployment_lock(client(root), "down", warn=print):
                pass


def test_another_containers_holder_with_our_hostname_and_a_dead_pid_is_not_taken_for_gone(tmp_path):
    # two containers (or CI runners) share a hostname and their pids; the other one's holder, alive
    # in its own PID namespace, has a pid that is no process here: its lock still holds
    gone = subprocess.Popen(["true"])
    gone.wait()
    root = tmp_path / "root"
    hold(root, pid=gone.pid, boot="another-boot-id", pidns="4026531836", start="1")
    warnings: list[str] = []
    with pytest.raises(Locked, match="deployment is busy"):
        with deployment_lock(client(root), "up", warn=warnings.append):
            pass
    assert warnings == [] and record(root)["holder"]["id"] == "other"
    # a holder of this machine and PID namespace whose process is gone is stale, taken over,
    # and its successor gets a higher token than it had
    here = lock._holder("up")
    hold(root, pid=gone.pid, boot=here["boot"], pidns=here["pidns"], start="1")
    with deployment_lock(client(root), "up", warn=warnings.append) as fence:
        assert fence.token == 8 and fence.took_over
    assert f"its process {gone.pid} on {socket.gethostname()} is gone" in warnings[0]


def test_a_lease_that_ran_out_on_the_hosts_clock_is_taken_over(tmp_path):
    root = tmp_path / "root"
    hold(root, machine="elsewhere", expires=time.time() - 30)
    warnings: list[str] = []
    with deployment_lock(client(root), "down", warn=warnings.append) as fence:
        assert fence.took_over and fence.token == 8
    assert re.search(r"its lease ran out \d+ s ago$", warnings[0]), warnings


def test_a_renewal_that_finds_the_lock_taken_stops_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "RENEW", 0.1)
    root = tmp_path / "root"
    c = client(root)
    with deployment_lock(c, "up") as fence:
        c.fence = fence
        # another operator judged it stale and took it over
        mine = record(root)["holder"]["id"]
        taken = lock._run(c, "take", "acquire", "thief", "120", mine, stdin=json.dumps({"id": "thief"}).encode())
        assert taken["acquired"] == 2
        wait_for(lambda: fence.lost, timeout=30, what="the renewal to find the lock taken")
        with pytest.raises(LeaseLost, match="lost the deployment lock on node-a .*its lease was broken"):
            c.call("state")
    assert record(root)["holder"]["id"] == "thief"  # its release left the new holder's lock alone


def test_a_host_refuses_an_older_token_before_touching_anything(tmp_path):
    root = tmp_path / "root"
    old, new = client(root), client(root)
    old.fence, new.fence = Fence(3, "node-a"), Fence(4, "node-a")
    assert old.call("fence") == {"fence": 3}
    assert new.call("fence") == {"fence": 4}
    with pytest.raises(LeaseLost, match="host node-a refused its token: it has seen token 4"):
        old.call("prepare", "g1", stdin=b"")
    assert sorted(p.name for p in root.iterdir()) == ["state"]  # no runtime, no generation
    assert old.fence.lost and not new.fence.lost
    with pytest.raises(LeaseLost):  # and the command makes no further call at all
        old.call("fence")


def test_a_lock_that_cannot_be_made_is_an_error_not_a_stale_lock(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the deployment's root should be")
    warnings: list[str] = []
    with pytest.raises(LauncherError) as err:
        with deployment_lock(client(blocker), "up", warn=warnings.append):
            pass
    assert not isinstance(err.value, Locked)
    assert "host node-a: cannot take the deployment lock (exit code 1): NotADirectoryError:" in str(err.value)
    assert warnings == []  # no "taking over a stale lock"
    assert blocker.read_text().startswith("a file")  # nothing touched
