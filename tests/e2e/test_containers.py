"""Ranks in real podman containers on the network-namespace testbed, watched from outside.

Two instances in containers on 2 hosts: `demo` (2 ranks per host, NPUs 0 and 1) and `side`
(1 rank per host, NPU 2). Each rank is one container; what runs is checked with podman itself
(containers by label, their pids) as well as with `launcher status`. The image is the offline
test image (tests/containers.py): the host's /usr mounted read-only gives it python3.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time

import pytest

from tests.containers import podman_argv, ulimit_args
from tests.helpers import agents_idle, cli_on_testbed, health_json, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 2
DEMO, SIDE = 18910, 18920  # health ports: demo's ranks take DEMO and DEMO+1 on each host


def name(tb: Testbed) -> str:
    return f"c{tb.id}"  # container storage is one per machine: the testbed's id keeps names apart


def topology(tb: Testbed, image: str, extra_env: str = "1") -> str:
    args = json.dumps(ulimit_args())
    container = (f"  container:\n    engine: {tb.engine}\n    image: {image}\n"
                 f"    mounts: [\"/usr:/usr:ro\"]\n    args: {args}\n    stop_timeout: 5\n")
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n"
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n"
                    f"    devices: {{0: 10.97.{i}.1, 1: 10.97.{i}.2, 2: 10.97.{i}.3}}\n"
                    for i, h in enumerate(tb.hosts))
    both = ", ".join(h.name for h in tb.hosts)
    return (topology_head(name(tb), extra_defaults=container + "  restart: {max: 5, window: 600}\n")
            + f"hosts:\n{hosts}instances:\n"
            f"  - name: demo\n    hosts: [{both}]\n    devices: [0, 1]\n    rendezvous_port: 29810\n"
            f"    command: [launcher-demo-rank, --health-port, \"{DEMO}\", --barrier-timeout, \"60\"]\n"
            f"    env: {{DEMO_VERSION: \"{extra_env}\"}}\n"
            f"    probe: {{http: \":{DEMO}/health\", timeout: 2, period: 0.2}}\n"
            f"  - name: side\n    hosts: [{both}]\n    devices: [2]\n    rendezvous_port: 29820\n"
            f"    command: [launcher-demo-rank, --health-port, \"{SIDE}\", --barrier-timeout, \"60\"]\n"
            f"    env: {{DEMO_VERSION: \"{extra_env}\"}}\n"
            f"    probe: {{http: \":{SIDE}/health\", timeout: 2, period: 0.2}}\n")


def endpoints(tb: Testbed) -> dict[str, list[tuple[str, int]]]:
    return {"demo": [(h.address, DEMO + k) for h in tb.hosts for k in (0, 1)],
            "side": [(h.address, SIDE) for h in tb.hosts]}


def barriers(tb: Testbed) -> dict[tuple[str, int], float] | None:
    """When each rank passed its barrier, once every rank of both instances answers /health."""
    out = {}
    for points in endpoints(tb).values():
        for addr, port in points:
            doc = health_json(addr, port)
            if not doc:
                return None
            out[(addr, port)] = doc["barrier_passed_at"]
    return out


def root(tb: Testbed, host) -> str:
    return f"/srv/launcher/{name(tb)}/{host.name}"


def podman(*args: str) -> str:
    import subprocess
    proc = subprocess.run(podman_argv(*args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def containers(tb: Testbed, host) -> list[dict]:
    """Every container of the deployment on a host, as podman sees it: name, state, program, pid."""
    ids = podman("ps", "-a", "-q", "--filter", f"label=ascend-launcher.root={root(tb, host)}").split()
    if not ids:
        return []
    fmt = '{{.Name}}\t{{.State.Status}}\t{{index .Config.Labels "ascend-launcher.program"}}\t{{.State.Pid}}'
    rows = [line.split("\t") for line in podman("inspect", "--format", fmt, *ids).splitlines()]
    return [{"name": n, "state": s, "program": p, "pid": int(pid)} for n, s, p, pid in rows]


def one_running_container_per_rank(tb: Testbed) -> bool:
    for h in tb.hosts:
        boxes = containers(tb, h)
        programs = sorted(b["program"] for b in boxes)
        if len(boxes) != 3 or len(set(programs)) != 3 or any(b["state"] != "running" for b in boxes):
            return False
    return True


def one_listener_per_port(tb: Testbed) -> bool:
    """From the host's own view (ss inside its network namespace): each rank port held by one process."""
    for h in tb.hosts:
        out = tb.run(h, ["ss", "-Htlnp"]).stdout
        for port in (DEMO, DEMO + 1, SIDE):
            holders = {m for line in out.splitlines() if f":{port} " in line
                       for m in re.findall(r"pid=(\d+)", line)}
            if len(holders) != 1:
                return False
    return True


def status(tb: Testbed, path: str) -> tuple[int, list[dict]]:
    run = cli_on_testbed(tb, "status", path, "--json")
    return run.code, json.loads(run.out)


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as fh:
                    if int(fh.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def deployed(container_testbed: Testbed, test_image: str, tmp_path_factory):
    tb = container_testbed
    path = tmp_path_factory.mktemp("containers") / "topo.yaml"
    path.write_text(topology(tb, test_image))
    run = cli_on_testbed(tb, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: barriers(tb), what="every rank past its barrier, in its container")
    yield tb, str(path)
    cli_on_testbed(tb, "down", str(path), "--purge")


def restarted_since(tb: Testbed, before: dict) -> dict | None:
    now = barriers(tb)
    if now and all(now[k] > before[k] for k in endpoints_of(tb, "demo")) and one_running_container_per_rank(tb):
        return now
    return None


def endpoints_of(tb: Testbed, instance: str) -> list[tuple[str, int]]:
    return endpoints(tb)[instance]


def test_each_rank_is_one_container_with_its_own_npu_and_the_status_says_which(deployed):
    tb, path = deployed
    assert one_running_container_per_rank(tb)
    code, rows = status(tb, path)
    assert code == 0
    ids = {b["name"]: b for h in tb.hosts for b in containers(tb, h)}
    assert len(rows) == 6 and all(r["state"] == "RUNNING" and r["container"]["state"] == "running" for r in rows)
    assert len({r["container"]["id"] for r in rows}) == 6
    # the rank's env and ranktable, read inside its container: its own rank, the world of 4
    doc = health_json(tb.hosts[1].address, DEMO + 1)
    assert doc["rank"] == 3 and doc["world_size"] == 4 and doc["host"] == tb.hosts[1].name
    box = next(b for b in ids.values() if b["program"] == "demo-r3")
    env = podman("exec", box["name"], "/bin/sh", "-c", "cat /proc/1/environ | tr '\\0' '\\n'; "
                 "tr '\\0' '\\n' < /proc/$(ls /proc | grep -E '^[0-9]+$' | sort -n | sed -n 2p)/environ")
    assert "RANK=3" in env and f"RANKTABLEFILE={root(tb, tb.hosts[1])}/current/" in env
    # only the deployment's generation and runtime, read-only, where the env says
    mounts = podman("inspect", "--format", "{{range .Mounts}}{{.Destination}}:{{.RW}} {{end}}", box["name"])
    assert f"{root(tb, tb.hosts[1])}/current:false" in mounts and "/usr:false" in mounts
    # the workload's own output is the program's log
    logs = cli_on_testbed(tb, "logs", path, "--rank", "3", "-n", "50")
    assert logs.code == 0 and "barrier passed: 4/4 ranks" in logs.out, logs.out + logs.err


def test_kill_9_of_the_rank_inside_its_container_restarts_the_whole_gang(deployed):
    tb, path = deployed
    before = barriers(tb)
    box = next(b for b in containers(tb, tb.hosts[0]) if b["program"] == "demo-r1")
    rank = children(box["pid"])  # the container's init (--init) runs the rank
    assert rank, f"no process under the container's init {box['pid']}"
    os.kill(rank[0], signal.SIGKILL)
    after = wait_for(lambda: restarted_since(tb, before), what="demo restarted whole, one container per rank")
    assert all(after[k] == before[k] for k in endpoints_of(tb, "side"))  # the other instance untouched
    code, rows = status(tb, path)
    assert code == 0 and {r["restarts"] for r in rows if r["instance"] == "demo"} == {1}


def test_podman_kill_of_a_container_restarts_the_whole_gang(deployed):
    tb, path = deployed
    before = barriers(tb)
    box = next(b for b in containers(tb, tb.hosts[1]) if b["program"] == "demo-r2")
    podman("kill", box["name"])
    wait_for(lambda: restarted_since(tb, before), what="demo restarted whole after podman kill")
    assert sum(b["program"] == "demo-r2" for b in containers(tb, tb.hosts[1])) == 1


def test_a_rolling_restart_keeps_at_most_one_instance_down(deployed):
    tb, path = deployed
    before = barriers(tb)
    worst: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            down = sum(any(health_json(a, p) is None for a, p in pts) for pts in endpoints(tb).values())
            worst.append(down)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = cli_on_testbed(tb, "restart", path, "--rolling", "--instance", "demo", "--instance", "side")
    finally:
        stop.set()
        watcher.join()
    assert run.code == 0, run.err
    after = wait_for(lambda: barriers(tb), what="every rank back")
    assert all(after[k] > before[k] for k in before)  # both instances were restarted ...
    assert max(worst) == 1  # ... one at a time
    assert one_running_container_per_rank(tb)


def test_after_supervisord_is_killed_up_leaves_exactly_one_container_per_rank(deployed):
    tb, path = deployed
    host = tb.hosts[0]
    pid = int(tb.run(host, ["cat", f"{root(tb, host)}/run/supervisord.pid"]).stdout.strip())
    os.kill(pid, signal.SIGKILL)
    run = cli_on_testbed(tb, "up", path)
    assert run.code == 0, run.err
    wait_for(lambda: barriers(tb) and one_running_container_per_rank(tb),
             what="every rank healthy again, one container each")
    # a second copy would come from gang work still under way (a late restart): wait until none is
    wait_for(lambda: agents_idle(tb, {h.name: root(tb, h) for h in tb.hosts}), what="the agents idle")
    assert one_running_container_per_rank(tb) and one_listener_per_port(tb)
    code, rows = status(tb, path)
    assert code == 0 and all(r["state"] == "RUNNING" for r in rows)


def test_a_killed_supervisord_comes_back_by_itself_and_each_gang_restarts_once(deployed):
    tb, path = deployed
    host = tb.hosts[0]
    # first a restart by the agent: the gang's record then says when each host last started it
    # (reports of runs older than that are dropped: the new supervisord's must not be)
    first = barriers(tb)
    podman("kill", next(b["name"] for b in containers(tb, tb.hosts[1]) if b["program"] == "demo-r2"))
    wait_for(lambda: restarted_since(tb, first), what="demo restarted by its agent")
    _, rows = status(tb, path)
    before = {r["instance"]: r["restarts"] for r in rows}
    old = barriers(tb)
    os.kill(int(tb.run(host, ["cat", f"{root(tb, host)}/run/supervisord.pid"]).stdout.strip()), signal.SIGKILL)
    after = wait_for(lambda: (b := barriers(tb)) and all(b[k] > old[k] for k in old)
                     and one_running_container_per_rank(tb) and b, what="both gangs restarted by the agent")
    # a second restart for the gang's other rank on that host would be gang work under way
    wait_for(lambda: agents_idle(tb, {h.name: root(tb, h) for h in tb.hosts}), what="the agents idle")
    assert barriers(tb) == after
    code, rows = status(tb, path)
    log = tb.run(host, ["cat", f"{root(tb, host)}/logs/launcher-agent.log"]).stdout
    assert code == 0 and {r["instance"]: r["restarts"] for r in rows} == {k: v + 1 for k, v in before.items()}, \
        (code, rows, log)
    assert "was not running under a new supervisord" in log


def supervision_of(tb: Testbed, host) -> list[int]:
    """supervisord, its agent, and every runner of the host with its engine client: what an OOM
    kill of the supervision tree takes, leaving the containers (under the engine's conmon)."""
    pids = [int(tb.run(host, ["cat", f"{root(tb, host)}/run/supervisord.pid"]).stdout.strip()),
            int(tb.run(host, ["cat", f"{root(tb, host)}/state/agent.pid"]).stdout.strip())]
    marker = f"launcher.host.container run {root(tb, host)} ".encode()
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                if d.isdigit() and marker in fh.read().replace(b"\0", b" "):
                    pids += [int(d), *children(int(d))]
        except OSError:
            pass
    return pids


def test_containers_whose_supervision_died_are_shown_orphaned_and_up_replaces_them(deployed):
    tb, path = deployed
    host = tb.hosts[1]
    pids = supervision_of(tb, host)
    assert len(pids) == 2 + 3 * 2  # supervisord, agent, 3 runners with their clients
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone already: with its parent, or on its own EOF
            os.kill(pid, signal.SIGKILL)
    left = wait_for(lambda: [b for b in containers(tb, host) if b["state"] == "running"] or None,
                    what="the containers living on")
    assert len(left) == 3
    code, rows = status(tb, path)
    assert code == 1
    mine = [r for r in rows if r["host"] == host.name]
    assert {r["state"] for r in mine} == {"ORPHANED"}
    old_ids = {podman("inspect", "--format", "{{.Id}}", b["name"]).strip()[:12] for b in left}
    assert {r["container"]["id"] for r in mine} == old_ids
    run = cli_on_testbed(tb, "up", path)
    assert run.code == 0, run.err
    assert "stopped what a dead supervisord left running" in run.err
    wait_for(lambda: barriers(tb) and one_running_container_per_rank(tb), what="one container per rank again")
    now = {podman("inspect", "--format", "{{.Id}}", b["name"]).strip()[:12] for b in containers(tb, host)}
    assert len(now) == 3 and not now & old_ids  # the orphans were replaced, not joined
    assert one_listener_per_port(tb)
    code, rows = status(tb, path)
    assert code == 0 and all(r["state"] == "RUNNING" for r in rows)


def test_check_and_up_refuse_a_host_without_the_image_before_anything_starts(deployed, test_image, tmp_path):
    tb, path = deployed
    run = cli_on_testbed(tb, "check", path, "--json")
    report = json.loads(run.out)["containers"]
    assert sorted(report) == [h.name for h in tb.hosts]
    for r in report.values():  # engine and image there; what the testbed lacks said once per host
        assert r["problems"] == [] and "/dev/davinci0" in r["missing"] and "/usr/local/Ascend/driver" in r["missing"]
    _, rows = status(tb, path)
    running = {r["program"]: (r["pid"], r["generation"]) for r in rows}
    missing = f"localhost/nope-{tb.id}:1"
    bad = tmp_path / "bad.yaml"
    bad.write_text(topology(tb, test_image, extra_env="2").replace(f"image: {test_image}", f"image: {missing}"))
    run = cli_on_testbed(tb, "check", str(bad))
    assert run.code == 1 and run.out.count(f"FAIL: image {missing} is not on this host") == 2, run.out
    run = cli_on_testbed(tb, "up", str(bad))
    assert run.code == 1
    lines = [ln for ln in run.err.splitlines() if f"image {missing} is not on this host" in ln]
    assert sorted(ln.split(":")[0].strip() for ln in lines) == [h.name for h in tb.hosts], run.err
    code, rows = status(tb, path)  # the running generation is untouched
    assert code == 0 and {r["program"]: (r["pid"], r["generation"]) for r in rows} == running
    nobin = tmp_path / "nobin.yaml"
    nobin.write_text(topology(tb, test_image).replace(f"engine: {tb.engine}", "engine: /nonexistent/docker"))
    run = cli_on_testbed(tb, "check", str(nobin))
    assert run.code == 1 and run.out.count("container engine '/nonexistent/docker' not found") == 2, run.out


def test_down_leaves_no_container_of_the_deployment(deployed):
    tb, path = deployed
    run = cli_on_testbed(tb, "down", path)
    assert run.code == 0, run.err
    for h in tb.hosts:
        assert containers(tb, h) == []
    assert all(health_json(a, p) is None for pts in endpoints(tb).values() for a, p in pts)
    run = cli_on_testbed(tb, "up", path)  # and it comes back (the module's teardown takes it down again)
    assert run.code == 0, run.err
    wait_for(lambda: barriers(tb) and one_running_container_per_rank(tb), what="up again after down")
