"""A stop gives the ranks in an instance's container their grace period before the container goes.

The container's own stop would end every rank at once (its first process gone, the kernel kills
the rest of its PID namespace): its runner waits until the ranks' runners have stopped them, each
with SIGTERM and `stop_timeout`. Checked with ranks that need 2 s after SIGTERM and say when they
are done, in their own logs, after `launcher restart` and after `down`.
"""
from __future__ import annotations

import json

from tests.containers import ulimit_args
from tests.e2e.test_containers import podman
from tests.helpers import cli_on_testbed, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 1
RANK = ('trap "echo got TERM; sleep 2; echo stopped gracefully; exit 0" TERM; echo rank up; '
        'while :; do sleep 0.2; done')


def topology(tb: Testbed, image: str) -> str:
    h = tb.hosts[0]
    container = (f"  container:\n    engine: {tb.engine}\n    image: {image}\n"
                 f"    mounts: [\"/usr:/usr:ro\"]\n    args: {json.dumps(ulimit_args())}\n    stop_timeout: 10\n")
    return (topology_head(f"g{tb.id}", extra_defaults=container)
            + f"hosts:\n  - name: {h.name}\n    address: {h.address}\n"
            f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n"
            "    devices: {0: 10.98.0.1, 1: 10.98.0.2}\n"
            f"instances:\n  - name: g\n    hosts: [{h.name}]\n    command: [/bin/sh, -c, {json.dumps(RANK)}]\n")


def root(tb: Testbed) -> str:
    return f"/srv/launcher/g{tb.id}/{tb.hosts[0].name}"


def left_running(tb: Testbed) -> list[str]:
    """The deployment's containers (podman, by label) and rank processes (by marker, in /proc)."""
    import os
    out = podman("ps", "-a", "-q", "--filter", f"label=ascend-launcher.root={root(tb)}").split()
    mark = f"LAUNCHER_EXEC={root(tb)}/".encode()
    marked = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/environ", "rb") as fh:
                if any(e.startswith(mark) for e in fh.read().split(b"\0")):
                    with open(f"/proc/{d}/stat", "rb") as st:
                        marked[int(d)] = int(st.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError):
            pass
    return out + [f"pid {p}" for p, ppid in marked.items() if ppid not in marked]  # a rank, not its children


def log(tb: Testbed, program: str) -> str:
    h = tb.hosts[0]
    return tb.run(h, ["cat", f"{root(tb)}/logs/{program}.log"]).stdout


def test_restart_and_down_stop_each_rank_gracefully_before_its_container(container_testbed, test_image, tmp_path):
    tb = container_testbed
    path = tmp_path / "topo.yaml"
    path.write_text(topology(tb, test_image))
    run = cli_on_testbed(tb, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: all("rank up" in log(tb, f"g-r{k}") for k in (0, 1)), what="both ranks up in the container")
    assert len(left_running(tb)) == 1 + 2  # one container, two ranks in it
    run = cli_on_testbed(tb, "restart", str(path), "--instance", "g")
    assert run.code == 0, run.err
    for k in (0, 1):
        assert "stopped gracefully" in log(tb, f"g-r{k}"), log(tb, f"g-r{k}")
    wait_for(lambda: all(log(tb, f"g-r{k}").count("rank up") == 2 for k in (0, 1)), what="both ranks up again")
    run = cli_on_testbed(tb, "down", str(path))
    assert run.code == 0, run.err
    for k in (0, 1):
        assert log(tb, f"g-r{k}").count("stopped gracefully") == 2, log(tb, f"g-r{k}")
    assert left_running(tb) == []
