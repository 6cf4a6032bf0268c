"""A 2-host framework: mindie-service instance in podman containers, as MindIE's guides run it.

One container per server (its program `svc-container`), the per-host MindIE process (the demo
rank in --mindie mode) exec'd into it. It finds its own server in the rank table by
MIES_CONTAINER_IP (container_ip on every host: with --net host, the host's address), the two meet
at the master's multiNodesInferPort, and the master serves on its host's address. Checked with
podman (one container per host) and /proc (the process in that container) as well as /health.
"""
from __future__ import annotations

import json
import os

from tests.containers import container_defaults
from tests.e2e.test_containers import podman
from tests.helpers import cli_on_testbed, health_json, topology_head, wait_for

TESTBED_HOSTS = 2
HEALTH = 18850
PORT = 27150
ENDPOINT = 18851


def topology(tb, image: str) -> str:
    container = container_defaults(tb, image, user="root")
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n    container_ip: {h.address}\n"
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n"
                    f"    devices: {{0: 10.79.{k}.1, 1: 10.79.{k}.2}}\n" for k, h in enumerate(tb.hosts))
    return (f"{topology_head(f'mc{tb.id}', extra_defaults=container)}hosts:\n{hosts}instances:\n"
            "  - name: svc\n    framework: mindie-service\n"
            f"    mindie: {{config: base.json, port: {PORT}}}\n    processes: per_host\n"
            f"    hosts: [{', '.join(h.name for h in tb.hosts)}]\n"
            f"    command: [launcher-demo-rank, --mindie, --health-port, \"{HEALTH}\"]\n"
            f"    probe: {{http: \":{HEALTH}/health\", period: 0.2}}\n")


def in_its_container(tb, h) -> bool:
    """One running container of the deployment on the host, the MindIE process inside it (by marker)."""
    root = f"/srv/launcher/mc{tb.id}/{h.name}"
    ids = podman("ps", "-q", "--filter", f"label=ascend-launcher.root={root}").split()
    if len(ids) != 1:
        return False
    pid = podman("inspect", "--format", "{{.State.Pid}}", ids[0]).strip()
    mark = f"LAUNCHER_EXEC={root}/".encode()
    inside = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/environ", "rb") as fh:
                if any(e.startswith(mark) for e in fh.read().split(b"\0")):
                    inside.append(os.readlink(f"/proc/{d}/ns/pid"))
        except OSError:
            pass
    return len(inside) == 1 and inside[0] == os.readlink(f"/proc/{pid}/ns/pid")


def test_a_two_host_mindie_service_instance_in_containers_forms_its_world(container_testbed, test_image, tmp_path):
    tb = container_testbed
    (tmp_path / "base.json").write_text(json.dumps({"ServerConfig": {"ipAddress": "127.0.0.1", "port": ENDPOINT},
                                                    "BackendConfig": {"multiNodesInferEnabled": False}}))
    path = tmp_path / "mc.yaml"
    path.write_text(topology(tb, test_image))
    try:
        run = cli_on_testbed(tb, "up", str(path))
        assert run.code == 0, run.err
        docs = [wait_for(lambda h=h: health_json(h.address, HEALTH), 60, f"{h.name} /health") for h in tb.hosts]
        assert [d["mindie"]["master"] for d in docs] == [True, False]
        assert [d["mindie"]["found_by"] for d in docs] == ["MIES_CONTAINER_IP"] * 2
        assert docs[0]["mindie"]["endpoint"] == f"{tb.hosts[0].address}:{ENDPOINT}"
        assert all(in_its_container(tb, h) for h in tb.hosts)
        run = cli_on_testbed(tb, "status", str(path), "--json")
        rows = json.loads(run.out)
        assert run.code == 0 and sorted(r["program"] for r in rows) == ["svc-container", "svc-container",
                                                                         "svc-h0", "svc-h1"]
    finally:
        cli_on_testbed(tb, "down", str(path), "--purge")
