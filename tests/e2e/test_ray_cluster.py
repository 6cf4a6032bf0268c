"""A real Ray cluster under the launcher, end to end: the vllm-ascend-ray-2node shape on the testbed.

Head and worker are services (tests/ray_testbed.py), each node offering one {"NPU": 1}. The driver
is an instance on the head's host, `launcher-demo-rank --ray`, shaped as vLLM's Ray executor: it
reserves one NPU bundle per node (STRICT_SPREAD), starts an actor in each, serves /health naming
its world, and exits when an actor or its node dies. Its world is checked through Ray itself (a
second driver reads the nodes and the placement group from the GCS), through `launcher status` and
through its /health.

- kill -9 of the worker's raylet: the worker service is restarted by its agent, and the driver
  (which lost its actor there) too, and its world is two nodes again.
- kill -9 of the head's whole tree: the driver says `restart_with: [ray-head]`, so it is started
  again only after the head was restarted and passed its probe (the restart it followed is in its
  record; no run of it failed to reach the cluster), and its world is two nodes again.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_on_testbed as cli, health_json, run_cli, ssh_flags, wait_for
from tests.ray_testbed import (PORT, agent_log, marked, needs_ray, ray_on_hosts, ray_text, rows, topology,
                               tree)

TESTBED_HOSTS = 2
HEALTH = 18871
pytestmark = needs_ray

# Read the cluster as a second driver does: alive nodes and the placement groups, from the GCS.
WORLD = """\
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
pgs = [{"state": p["state"], "nodes": sorted(set(p["bundles_to_node_id"].values()))}
       for p in ray.util.placement_group_table().values()]
print("WORLD", json.dumps({"nodes": nodes, "pgs": pgs}))
"""


def driver(tb) -> str:
    """The driver instance: on h1, the venv's Python first in PATH (its `python3` has Ray)."""
    h1 = tb.hosts[0]
    path = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return f"""\
instances:
  - name: driver
    hosts: [{h1.name}]
    processes: per_host
    env: {{PATH: "{path}"}}
    depends_on: [ray-worker]
    restart_with: [ray-head]
    command: [launcher-demo-rank, --ray, "{h1.address}:{PORT}", --ray-nodes, "2", --ray-resource, NPU,
              --ray-timeout, "60", --health-port, "{HEALTH}"]
    probe: {{http: ":{HEALTH}/health", timeout: 5}}
"""


@pytest.fixture
def cluster(testbed, tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text(topology(testbed, ray_on_hosts(testbed), resources='{"NPU": 1}', instances=driver(testbed)))
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def ray_world(tb) -> dict | None:
    """Alive nodes and placement groups as Ray's GCS has them (None while it does not answer)."""
    py = str(Path(ray_on_hosts(tb)[0]).parent / "python3")
    proc = tb.run(tb.hosts[0].name, [py, "-c", WORLD, f"{tb.hosts[0].address}:{PORT}"])
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    said = [ln for ln in out.splitlines() if ln.startswith("WORLD ")]  # Ray may print warnings too
    return json.loads(said[-1][6:]) if proc.returncode == 0 and said else None


def driver_world(tb, not_nodes: set[str] = frozenset()) -> dict | None:
    """The driver's /health, once its world is two nodes and none of ``not_nodes``."""
    doc = health_json(tb.hosts[0].address, HEALTH)
    if doc and len(doc["ray"]["nodes"]) == 2 and not set(doc["ray"]["nodes"]) & set(not_nodes):
        return doc
    return None


def check_world(tb, path: str, doc: dict) -> None:
    """The driver's world agrees with Ray's and with `launcher status`."""
    world = wait_for(lambda: (w := ray_world(tb)) and w["nodes"] == doc["ray"]["nodes"] and w, 60,
                     "Ray's GCS to list the driver's two nodes alive")
    assert {"state": "CREATED", "nodes": doc["ray"]["nodes"]} in world["pgs"], world
    assert sorted(a["ip"] for a in doc["ray"]["actors"]) == sorted(h.address for h in tb.hosts)
    status = rows(tb, path)
    assert all(status[n]["state"] == "RUNNING" for n in ("ray-head", "ray-worker", "driver")), status
    assert status["driver"]["pid"] == doc["pid"]
    # `ray status` (the autoscaler's report, refreshed every few seconds): both nodes' NPU held by the bundles
    wait_for(lambda: "2.0/2.0 NPU" in (ray_text(tb, "status") or ""), 60, "`ray status` to show 2.0/2.0 NPU used")


def test_the_driver_places_an_actor_on_each_node_and_heals_after_the_worker_raylet_is_killed(testbed, cluster):
    tb, path = testbed, cluster
    run = cli(tb, "up", path)
    assert run.code == 0, run.err + run.out
    first = wait_for(lambda: driver_world(tb), 120, "the driver's world of two nodes")
    check_world(tb, path, first)

    worker_root = f"/srv/launcher/ray{tb.id}/{tb.hosts[1].name}"
    raylet = marked(worker_root, "raylet")
    assert len(raylet) == 1, raylet
    os.kill(raylet[0], signal.SIGKILL)

    lost = {a["node_id"] for a in first["ray"]["actors"] if a["ip"] == tb.hosts[1].address}
    again = wait_for(lambda: driver_world(tb, lost), 180, "the driver's world of two nodes, h2's a new one")
    check_world(tb, path, again)
    status = rows(tb, path)
    assert status["ray-worker"]["restarts"] == 1, (status["ray-worker"], agent_log(tb, tb.hosts[1], worker_root),
                                                   tb.run(tb.hosts[1].name, ["tail", "-50", f"{worker_root}/logs/ray-worker.log"]).stdout)
    assert status["driver"]["restarts"] >= 1 and again["pid"] != first["pid"], status["driver"]

    down = cli(tb, "down", path)
    assert down.code == 0, down.err
    for h in tb.hosts:
        assert marked(f"/srv/launcher/ray{tb.id}/{h.name}") == []


def test_kill_9_of_the_head_restarts_the_driver_after_the_head_is_ready(testbed, cluster):
    tb, path = testbed, cluster
    h1 = tb.hosts[0]
    root = f"/srv/launcher/ray{tb.id}/{h1.name}"
    run = cli(tb, "up", path)
    assert run.code == 0, run.err + run.out
    first = wait_for(lambda: driver_world(tb), 120, "the driver's world of two nodes")
    check_world(tb, path, first)
    before = agent_log(tb, h1, root)
    driver_log = f"{root}/logs/{rows(tb, path)['driver']['program']}.log"
    runs_before = tb.run(h1.name, ["cat", driver_log]).stdout
    runs_before = len(runs_before if isinstance(runs_before, str) else runs_before.decode())

    head = rows(tb, path)["ray-head"]
    for pid in tree(head["pid"]):  # the head's whole tree: unshare, ray start, GCS, raylet, its workers
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    again = wait_for(lambda: driver_world(tb, set(first["ray"]["nodes"])), 240,
                     "the driver's world of two new nodes")
    check_world(tb, path, again)
    status = rows(tb, path)
    assert status["ray-head"]["restarts"] == 1, status["ray-head"]
    log = agent_log(tb, h1, root)[len(before):]
    assert "gang ray-head: ready again after its restart; restarting driver after it (restart_with)" in log, log
    # the driver's record names the head's run it was started after (the head's last restart)
    gang = json.loads(tb.run(h1.name, ["cat", f"{root}/state/gang.json"]).stdout)
    assert gang["driver"]["followed"] == {f"ray-head@{h1.name}": gang["ray-head"]["last_restart"]}, gang
    # ... and it was started after the head passed its probe: every run of it since found the cluster
    out = tb.run(h1.name, ["cat", driver_log]).stdout
    since = (out if isinstance(out, str) else out.decode())[runs_before:]
    starts, connected = since.count("[demo_rank ray] pid "), since.count("[demo_rank ray] connected to")
    assert status["driver"]["restarts"] == 1 and starts == 1 and connected == 1, (status["driver"], since)

    down = cli(tb, "down", path)
    assert down.code == 0, down.err
    for h in tb.hosts:
        assert marked(f"/srv/launcher/ray{tb.id}/{h.name}") == []
