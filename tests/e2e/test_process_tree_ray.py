"""A real multi-process program under the launcher: a Ray cluster (Ray from PyPI, the `test` extra)
as two services on the testbed, `ray start --head --block` on h1 and a worker node on h2, as
configs/vllm-ascend-ray-2node.yaml runs them. kill -9 of the head's program leaves `ray start`, its
GCS server, raylet and the rest re-parented and holding the GCS port; the agent stops them
(launcher/host/proctree.py) before the restart, so the head comes back at the first attempt, the
worker rejoins, and the host runs one GCS server and one raylet. `down` leaves none of it.

The head runs in a PID namespace of its own (`unshare --pid --fork --mount-proc`), for two reasons:
- `ray start --head` refuses to start while it sees a raylet naming its GCS address
  (ray/_private/services.py, find_gcs_addresses). The testbed's hosts share one PID namespace, so it
  would see the worker's raylet on h2, which no real head host can see.
- Since Ray 2.5x, kill -9 of `ray start` itself takes its GCS server and raylet with it (they die
  with their parent). kill -9 of the wrapper around it (unshare here; `bash -c`, a container runtime
  in real use) leaves the whole tree running, the case of the issue: the GCS holds the port.

Ray runs from this venv, which lives under /root (0700): the topology logs in as root.
"""
from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_on_testbed as cli, run_cli, ssh_flags, wait_for

TESTBED_HOSTS = 2
RAY = Path(sys.executable).parent / "ray"
PORT = 6390
pytestmark = pytest.mark.skipif(not RAY.exists(), reason=f"ray is not installed in this venv ({RAY}): pip install -e .[test]")


def ray_on_hosts(tb) -> list[str]:
    """How the testbed hosts run this venv's `ray`; skips when they cannot see it (a checkout under
    /tmp, /srv or a home: the hosts have private ones)."""
    if tb.run(tb.hosts[0].name, ["test", "-x", str(RAY)]).returncode != 0:
        pytest.skip(f"the testbed hosts cannot see this venv's ray ({RAY}): the checkout is under a "
                    "directory the hosts have a private copy of (/tmp, /srv, a home); run from another one")
    return [str(RAY)]


def topology(tb, ray: list[str]) -> str:
    h1, h2 = tb.hosts
    cmd = ", ".join(f'"{a}"' for a in ray)
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n"
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n    devices: {{0: 10.99.{i}.1}}\n"
                    for i, h in enumerate(tb.hosts))
    # small: one CPU, no dashboard, the least object store Ray takes, its files in the host's own /tmp;
    # a worker that lost its head gives up after 10 s (60 by default) and is restarted to rejoin
    small = ('"--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", "78643200", '
             '"--temp-dir", "/tmp/ray"')
    env = '{RAY_gcs_rpc_server_reconnect_timeout_s: "10"}'
    own_pids = '"unshare", "--pid", "--fork", "--mount-proc", '  # see the module's docstring
    return f"""\
version: 1
name: ray{tb.id}
defaults:
  deploy_dir: /srv/launcher
  restart: {{max: 3, window: 600}}
  preflight: false
hosts:
{hosts}services:
  - name: ray-head
    kind: generic
    hosts: [{h1.name}]
    env: {env}
    command: [{own_pids}{cmd}, start, --head, --port, "{PORT}", --node-ip-address, "{h1.address}", --block,
              --include-dashboard=false, {small}]
    probe: {{tcp: "{h1.address}:{PORT}", timeout: 5}}
  - name: ray-worker
    kind: generic
    hosts: [{h2.name}]
    env: {env}
    depends_on: [ray-head]
    command: [{cmd}, start, --address, "{h1.address}:{PORT}", --node-ip-address, "{h2.address}", --block, {small}]
    probe: {{log: "Ray runtime started", timeout: 120}}
"""


@pytest.fixture
def ray_cluster(testbed, tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(topology(testbed, ray_on_hosts(testbed)))
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def marked(root: str, comm: str | None = None) -> list[int]:
    """Live processes carrying the marker of ROOT's supervisord (the deployment's on one host:
    ROOT names the host), with command name ``comm`` when given."""
    marker = f"SUPERVISOR_SERVER_URL=unix://{root}/run/supervisor.sock".encode()
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        name, state = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(), stat.rsplit(b")", 1)[1].split()[0]
        if marker in env and state not in (b"Z", b"X") and (comm is None or name == comm):
            out.append(int(d))
    return sorted(out)


def active_nodes(tb) -> int:
    """Nodes `ray status` counts as active (run on h1, as the head's own host sees it)."""
    proc = tb.run(tb.hosts[0].name, [*ray_on_hosts(tb), "status", "--address", f"{tb.hosts[0].address}:{PORT}"])
    if proc.returncode != 0:
        return 0
    text = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    active = text.split("Active:", 1)[1].split("Pending:", 1)[0] if "Active:" in text else ""
    return len(re.findall(r"^\s*1 node_", active, re.M))


def listening(tb, port: int) -> int:
    """Sockets listening on PORT on h1 (`ss -ltn` there)."""
    proc = tb.run(tb.hosts[0].name, ["ss", "-Hltn", f"sport = :{port}"])
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    return len([ln for ln in out.splitlines() if ln.strip()])


def rows(tb, path: str) -> dict[str, dict]:
    import json
    return {r.get("instance") or r.get("service") or r["program"]: r
            for r in json.loads(cli(tb, "status", path, "--json").out)}


def test_kill_9_of_the_ray_head_restarts_one_ray(testbed, ray_cluster):
    tb, path = testbed, ray_cluster
    head_root = f"/srv/launcher/ray{tb.id}/{tb.hosts[0].name}"
    run = cli(tb, "up", path)
    assert run.code == 0, run.err + run.out
    wait_for(lambda: active_nodes(tb) == 2, timeout=180, what="a Ray cluster of two nodes")
    gcs, raylet = marked(head_root, "gcs_server"), marked(head_root, "raylet")
    assert len(gcs) == 1 and len(raylet) == 1, (gcs, raylet)
    head = rows(tb, path)["ray-head"]
    os.kill(head["pid"], signal.SIGKILL)  # unshare: `ray start --block`, its GCS server and raylet live on

    wait_for(lambda: (r := rows(tb, path)["ray-head"])["state"] == "RUNNING" and r["pid"] != head["pid"],
             timeout=120, what="the head's service running again")
    wait_for(lambda: active_nodes(tb) == 2, timeout=180, what="Ray working again, both nodes active")
    r = rows(tb, path)["ray-head"]
    assert r["restarts"] == 1, r  # the first restart worked: no budget spent against a held port
    new_gcs, new_raylet = marked(head_root, "gcs_server"), marked(head_root, "raylet")
    assert len(new_gcs) == 1 and len(new_raylet) == 1, (new_gcs, new_raylet)
    assert set(new_gcs).isdisjoint(gcs) and set(new_raylet).isdisjoint(raylet)
    assert listening(tb, PORT) == 1
    log = tb.run(tb.hosts[0].name, ["cat", f"{head_root}/logs/launcher-agent.log"]).stdout
    log = log if isinstance(log, str) else log.decode()
    assert "ray-head: stopped what outlived its program: ray-head (pids " in log, log  # there were leftovers

    down = cli(tb, "down", path)
    assert down.code == 0, down.err
    for h in tb.hosts:
        assert marked(f"/srv/launcher/ray{tb.id}/{h.name}") == []
