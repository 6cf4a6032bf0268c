"""A real Ray cluster as one gang, the shape of configs/k8s-vllm-ascend-ray.yaml, on the testbed.

One instance on h1 and h2: h1 runs the Ray head and then the driver (`launcher-demo-rank --ray`,
shaped as vLLM's Ray executor: one actor per node, /health naming them), h2 waits for the head's
GCS and joins it; the probe is `on: first_host`, as the workers serve nothing. This is how the
form exports to Kubernetes (one LeaderWorkerSet group), where `restart_with` cannot.

- `up` comes back once the driver's world has both nodes, and `status` probes h1 alone.
- kill -9 of the head's whole tree restarts the gang whole: a new head, a worker that joined it and
  a driver whose world is two new nodes; `ps` shows one GCS server and one raylet per host.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_on_testbed as cli, health_json, run_cli, ssh_flags, wait_for
from tests.ray_testbed import PORT, marked, needs_ray, ray_header, ray_on_hosts, tree

TESTBED_HOSTS = 2
HEALTH = 18873
pytestmark = needs_ray

# ray start's own small footprint, as tests/ray_testbed.py runs it; each node offers one NPU
SMALL = ("--num-cpus 1 --disable-usage-stats --object-store-memory 78643200 --temp-dir /tmp/ray "
         "--resources '{\"NPU\": 1}'")


def topology(tb, ray: str) -> str:
    h1 = tb.hosts[0]
    path = f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # the head in a PID namespace of its own: `ray start --head` refuses to start while it sees a
    # raylet naming its GCS, and the testbed's hosts share one (tests/ray_testbed.py)
    head = (f"{ray} start --head --port {PORT} --node-ip-address \"$LAUNCHER_HOST_ADDRESS\" "
            f"--include-dashboard=false {SMALL} && exec launcher-demo-rank --ray \"$LAUNCHER_HOST_ADDRESS:{PORT}\" "
            f"--ray-nodes 2 --ray-resource NPU --ray-timeout 60 --health-port {HEALTH}")
    script = (
        'set -e\n'
        'if [ "$1" = head ]; then\n'
        f'  exec unshare --pid --fork --mount-proc sh -c {json.dumps(head)}\n'
        'fi\n'
        f'until {ray} health-check --address "$MASTER_ADDR:{PORT}" >/dev/null 2>&1; do sleep 1; done\n'
        f'exec {ray} start --address "$MASTER_ADDR:{PORT}" --node-ip-address "$LAUNCHER_HOST_ADDRESS" --block {SMALL}\n')
    return f"""\
{ray_header(tb, f"rayg{tb.id}")}instances:
  - name: ray
    hosts: [{h1.name}, {tb.hosts[1].name}]
    processes: per_host
    env: {{PATH: "{path}", RAY_gcs_rpc_server_reconnect_timeout_s: "10"}}
    command: [sh, -c, {json.dumps(script)}, ray-node]
    leader_args: [head]
    worker_args: [worker]
    probe: {{http: ":{HEALTH}/health", timeout: 5, on: first_host}}
"""


@pytest.fixture
def gang(testbed, tmp_path):
    path = tmp_path / "ray-gang.yaml"
    path.write_text(topology(testbed, ray_on_hosts(testbed)[0]))
    yield str(path)
    run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def world(tb, not_nodes: set[str] = frozenset()) -> dict | None:
    """The driver's /health once its world is two nodes, none of ``not_nodes``."""
    doc = health_json(tb.hosts[0].address, HEALTH)
    if doc and len(doc["ray"]["nodes"]) == 2 and not set(doc["ray"]["nodes"]) & set(not_nodes):
        return doc
    return None


def ray_daemons(tb, root_of) -> dict[str, dict[str, int]]:
    """Per host, how many GCS servers and raylets of this deployment run (from /proc, as `ps`)."""
    return {h.name: {comm: len(marked(root_of(h), comm)) for comm in ("gcs_server", "raylet")} for h in tb.hosts}


def test_a_ray_cluster_in_one_gang_serves_and_restarts_whole_when_its_head_dies(testbed, gang):
    tb, path = testbed, gang
    h1 = tb.hosts[0]

    def root_of(h) -> str:
        return f"/srv/launcher/rayg{tb.id}/{h.name}"
    run = cli(tb, "up", path)
    assert run.code == 0, run.err + run.out
    first = wait_for(lambda: world(tb), 120, "the driver's world of two nodes")
    assert sorted(a["ip"] for a in first["ray"]["actors"]) == sorted(h.address for h in tb.hosts)
    assert ray_daemons(tb, root_of) == {h1.name: {"gcs_server": 1, "raylet": 1},
                                        tb.hosts[1].name: {"gcs_server": 0, "raylet": 1}}
    rows = json.loads(cli(tb, "status", path, "--json").out)
    # the head's host answers the probe; the worker's has none to answer (`on: first_host`)
    assert {(r["host"], r["state"], r["ready"]) for r in rows} == {(h1.name, "RUNNING", True),
                                                                   (tb.hosts[1].name, "RUNNING", None)}, rows

    head = next(r for r in rows if r["host"] == h1.name)
    for pid in tree(head["pid"]):  # the head's whole tree: unshare, GCS, raylet, the driver
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    again = wait_for(lambda: world(tb, set(first["ray"]["nodes"])), 240, "the driver's world of two new nodes")
    assert again["ray"]["placement_group"] != first["ray"]["placement_group"]  # a new driver (pid 1 in its namespace)
    # one cluster: the old worker node went with its gang, nothing of the old head survived
    wait_for(lambda: ray_daemons(tb, root_of) == {h1.name: {"gcs_server": 1, "raylet": 1},
                                                  tb.hosts[1].name: {"gcs_server": 0, "raylet": 1}},
             30, "one GCS server on h1 and one raylet per host")
    rows = json.loads(cli(tb, "status", path, "--json").out)
    assert all(r["state"] == "RUNNING" and r["restarts"] == 1 for r in rows), rows  # one gang restart

    down = cli(tb, "down", path)
    assert down.code == 0, down.err
    for h in tb.hosts:
        assert marked(root_of(h)) == []
