"""A real multi-process program under the launcher: a Ray cluster (Ray from PyPI, the `test` extra)
as two services on the testbed, `ray start --head --block` on h1 and a worker node on h2, as
configs/vllm-ascend-ray-2node.yaml runs them (tests/ray_testbed.py says how, and why the head runs
in a PID namespace of its own). kill -9 of the head's program leaves `ray start`, its GCS server,
raylet and the rest re-parented and holding the GCS port; the agent stops them
(launcher/host/proctree.py) before the restart, so the head comes back at the first attempt, the
worker rejoins, and the host runs one GCS server and one raylet. `down` leaves none of it.
"""
from __future__ import annotations

import os
import signal

import pytest

from tests.helpers import cli_on_testbed as cli, run_cli, ssh_flags, wait_for
from tests.ray_testbed import PORT, active_nodes, agent_log, listening, marked, needs_ray, ray_on_hosts, rows, topology

TESTBED_HOSTS = 2
pytestmark = needs_ray


@pytest.fixture
def ray_cluster(testbed, tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(topology(testbed, ray_on_hosts(testbed)))
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


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
    log = agent_log(tb, tb.hosts[0], head_root)
    assert "ray-head: stopped what outlived its program: ray-head (pids " in log, log  # there were leftovers

    down = cli(tb, "down", path)
    assert down.code == 0, down.err
    for h in tb.hosts:
        assert marked(f"/srv/launcher/ray{tb.id}/{h.name}") == []
