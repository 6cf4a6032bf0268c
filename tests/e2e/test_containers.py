"""An ATB-shaped instance in real podman containers on the network-namespace testbed, watched from outside.

`atb` (framework: atb, 2 hosts x 8 NPUs, the demo rank as the rank program) runs as ONE container
per host, holding that host's NPUs, with its 8 ranks exec'd into it; a generic service `svc` keeps
a container of its own. What runs is checked with podman itself (containers by label), with the
kernel's process table (each rank's process found by the LAUNCHER_EXEC marker its runner gives it,
and the container it runs in by PID namespace) and with `launcher status`. The image is the offline
test image (tests/containers.py): the host's /usr mounted read-only gives it python3.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal

import pytest

from tests.containers import container_defaults, podman_argv
from tests.helpers import agents_idle, cli_on_testbed, health_json, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 2
PORT = 18910  # health ports: rank with local rank k answers on PORT + k on its host
NPUS = 8
BOX = "atb-container"


def name(tb: Testbed) -> str:
    return f"c{tb.id}"  # container storage is one per machine: the testbed's id keeps names apart


def topology(tb: Testbed, image: str, extra_env: str = "1") -> str:
    container = container_defaults(tb, image)
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n"
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n"
                    f"    devices: {{{', '.join(f'{d}: 10.97.{i}.{d + 1}' for d in range(NPUS))}}}\n"
                    for i, h in enumerate(tb.hosts))
    both = ", ".join(h.name for h in tb.hosts)
    return (topology_head(name(tb), extra_defaults=container + "  restart: {max: 20, window: 600}\n")
            + f"hosts:\n{hosts}instances:\n"
            f"  - name: atb\n    framework: atb\n    hosts: [{both}]\n    rendezvous_port: 29810\n"
            f"    command: [launcher-demo-rank, --health-port, \"{PORT}\", --barrier-timeout, \"120\"]\n"
            f"    env: {{DEMO_VERSION: \"{extra_env}\"}}\n"
            f"    probe: {{http: \":{PORT}/health\", timeout: 2, period: 0.2}}\n"
            f"services:\n  - name: svc\n    kind: generic\n    hosts: [{tb.hosts[0].name}]\n"
            f"    command: [sleep, \"100000\"]\n")


def endpoints(tb: Testbed) -> list[tuple[str, int]]:
    return [(h.address, PORT + k) for h in tb.hosts for k in range(NPUS)]


def barriers(tb: Testbed) -> dict[tuple[str, int], float] | None:
    """When each rank passed its barrier, once all 16 answer /health."""
    out = {}
    for addr, port in endpoints(tb):
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
    """Every container of the deployment on a host, as podman sees it: name, state, program, pid, id."""
    ids = podman("ps", "-a", "-q", "--filter", f"label=ascend-launcher.root={root(tb, host)}").split()
    if not ids:
        return []
    fmt = '{{.Name}}\t{{.State.Status}}\t{{index .Config.Labels "ascend-launcher.program"}}\t{{.State.Pid}}\t{{.Id}}'
    rows = [line.split("\t") for line in podman("inspect", "--format", fmt, *ids).splitlines()]
    return [{"name": n, "state": s, "program": p, "pid": int(pid), "id": i[:12]} for n, s, p, pid, i in rows]


def box(tb: Testbed, host) -> dict:
    (b,) = [c for c in containers(tb, host) if c["program"] == BOX]
    return b


def _environ(pid: str) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def rank_processes(tb: Testbed) -> dict[str, list[int]]:
    """program -> the pids carrying its LAUNCHER_EXEC marker whose parent does not (one per live
    copy of the rank), over the whole machine (the testbed's hosts share one process table)."""
    prefixes = {f"LAUNCHER_EXEC={root(tb, h)}/".encode() for h in tb.hosts}
    marked: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            for e in _environ(d):
                if any(e.startswith(p) for p in prefixes):
                    marked[int(d)] = e.decode().rsplit("/", 1)[1]
    out: dict[str, list[int]] = {}
    for pid, program in marked.items():
        if marked.get(_ppid(pid)) != program:
            out.setdefault(program, []).append(pid)
    return out


def exec_clients(tb: Testbed) -> list[int]:
    """Host processes that are a rank's `podman exec` client."""
    want = [f"LAUNCHER_EXEC={root(tb, h)}/".encode() for h in tb.hosts]
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
        except OSError:
            continue
        if b"exec" in cmd and any(a.startswith(w) for a in cmd for w in want):
            out.append(int(d))
    return out


def pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def exactly_one_copy_in_one_container_per_host(tb: Testbed) -> bool:
    """Each host: one running container of the instance (and svc's own on the first host); each of
    the 16 ranks one process, in its host's container; one exec client per rank; nothing more."""
    for i, h in enumerate(tb.hosts):
        boxes = containers(tb, h)
        if sorted(b["program"] for b in boxes) != sorted([BOX] + (["svc"] if i == 0 else [])) \
                or any(b["state"] != "running" for b in boxes):
            return False
    ranks = rank_processes(tb)
    if sorted(ranks) != sorted(f"atb-r{k}" for k in range(2 * NPUS)) or any(len(p) != 1 for p in ranks.values()):
        return False
    for i, h in enumerate(tb.hosts):
        ns = pid_ns(box(tb, h)["pid"])
        if any(pid_ns(ranks[f"atb-r{k}"][0]) != ns for k in range(i * NPUS, (i + 1) * NPUS)):
            return False
    return len(exec_clients(tb)) == 2 * NPUS


def one_listener_per_port(tb: Testbed) -> bool:
    """From the host's own view (ss inside its network namespace): each rank port held by one process."""
    for h in tb.hosts:
        out = tb.run(h, ["ss", "-Htlnp"]).stdout
        for port in range(PORT, PORT + NPUS):
            holders = {m for line in out.splitlines() if f":{port} " in line for m in re.findall(r"pid=(\d+)", line)}
            if len(holders) != 1:
                return False
    return True


def status(tb: Testbed, path: str) -> tuple[int, list[dict]]:
    run = cli_on_testbed(tb, "status", path, "--json")
    return run.code, json.loads(run.out)


@pytest.fixture(scope="module")
def deployed(container_testbed: Testbed, test_image: str, tmp_path_factory):
    tb = container_testbed
    path = tmp_path_factory.mktemp("containers") / "topo.yaml"
    path.write_text(topology(tb, test_image))
    run = cli_on_testbed(tb, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: barriers(tb), timeout=180, what="all 16 ranks past their barrier, in 2 containers")
    yield tb, str(path)
    cli_on_testbed(tb, "down", str(path), "--purge")


def settled(tb: Testbed, before: dict) -> dict | None:
    """Every rank restarted since ``before`` (a new barrier), one copy each, and the agents idle."""
    now = barriers(tb)
    if now and all(now[k] > before[k] for k in before) and exactly_one_copy_in_one_container_per_host(tb) \
            and agents_idle(tb, {h.name: root(tb, h) for h in tb.hosts}):
        return now
    return None


def why_not_settled(tb: Testbed, path: str, before: dict) -> str:
    """What a failed wait saw: which part of `settled` is false, status, and the agents' logs."""
    now = barriers(tb)
    parts = [f"barriers: {'none (some rank not answering)' if not now else 'stale: ' + str([k for k in before if now[k] <= before[k]])}",
             f"containers: {[(h.name, containers(tb, h)) for h in tb.hosts]}",
             f"rank processes: {rank_processes(tb)}", f"exec clients: {len(exec_clients(tb))}",
             f"agents idle: {agents_idle(tb, {h.name: root(tb, h) for h in tb.hosts})}",
             "status: " + cli_on_testbed(tb, "status", path).out]
    for h in tb.hosts:
        log = tb.run(h, ["sh", "-c", f"tail -n 60 {root(tb, h)}/logs/launcher-agent.log"]).stdout
        parts.append(f"== {h.name} agent log\n{log}")
    return "\n".join(parts)


def restarted_whole(tb: Testbed, path: str, before: dict, old_boxes: set[str]) -> None:
    try:
        wait_for(lambda: settled(tb, before), timeout=180, what="the gang back whole: 16 ranks, one copy each")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{why_not_settled(tb, path, before)}") from None
    assert not {box(tb, h)["id"] for h in tb.hosts} & old_boxes  # both hosts' containers were replaced
    assert one_listener_per_port(tb)
    code, rows = status(tb, path)
    assert code == 0 and all(r["state"] == "RUNNING" for r in rows), rows


def test_16_ranks_run_in_2_containers_and_status_shows_each_with_its_own_pid(deployed):
    tb, path = deployed
    assert exactly_one_copy_in_one_container_per_host(tb)
    code, rows = status(tb, path)
    assert code == 0, rows
    mine = [r for r in rows if r["instance"] == "atb"]
    assert len(mine) == 2 * NPUS + 2 and all(r["state"] == "RUNNING" for r in mine)
    assert len({r["pid"] for r in mine}) == len(mine)  # every rank its own supervised process
    for h in tb.hosts:  # every rank of a host shows its host's one container
        ids = {r["container"]["id"] for r in mine if r["host"] == h.name}
        assert ids == {box(tb, h)["id"]}
    svc = next(r for r in rows if r["program"] == "svc")
    assert svc["container"]["id"] != box(tb, tb.hosts[0])["id"]  # a service keeps a container of its own
    # the rank's env and ranktable, read inside the container: its own rank in the world of 16
    doc = health_json(tb.hosts[1].address, PORT + 3)
    assert doc["rank"] == 11 and doc["world_size"] == 16 and doc["host"] == tb.hosts[1].name
    # the workload's own output is each rank's own log
    logs = cli_on_testbed(tb, "logs", path, "--rank", "11", "-n", "50")
    assert logs.code == 0 and "barrier passed: 16/16 ranks" in logs.out, logs.out + logs.err
    assert "rank 11/16" in logs.out and "rank 10/16" not in logs.out


def test_kill_9_of_a_rank_inside_the_container_restarts_the_whole_gang(deployed):
    tb, path = deployed
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    (rank,) = rank_processes(tb)["atb-r5"]
    os.kill(rank, signal.SIGKILL)
    restarted_whole(tb, path, before, old)


def test_kill_9_of_a_ranks_exec_client_leaves_no_second_copy(deployed):
    """The killed client leaves its rank running inside: the runner stops it, the gang restarts."""
    tb, path = deployed
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    (rank,) = rank_processes(tb)["atb-r9"]
    client = next(p for p in exec_clients(tb)
                  if f"LAUNCHER_EXEC={root(tb, tb.hosts[1])}/atb-r9".encode()
                  in open(f"/proc/{p}/cmdline", "rb").read().split(b"\0"))
    os.kill(client, signal.SIGKILL)
    restarted_whole(tb, path, before, old)
    assert rank not in rank_processes(tb)["atb-r9"]
    log = tb.run(tb.hosts[1], ["cat", f"{root(tb, tb.hosts[1])}/logs/atb-r9.log"]).stdout
    assert "its exec client was killed" in log, log[-2000:]


def test_kill_9_of_a_ranks_runner_stops_the_rank_it_left_before_the_gang_restarts(deployed):
    """The runner gone, its exec client and the rank inside live on: the agent stops both as the
    program's leftovers (the rank found in the container by its marker), then restarts the gang."""
    tb, path = deployed
    host = tb.hosts[1]
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    (rank,) = rank_processes(tb)["atb-r12"]
    _, rows = status(tb, path)
    runner = next(r["pid"] for r in rows if r["program"] == "atb-r12")
    os.kill(runner, signal.SIGKILL)
    restarted_whole(tb, path, before, old)
    assert rank not in rank_processes(tb)["atb-r12"]
    log = tb.run(host, ["cat", f"{root(tb, host)}/logs/launcher-agent.log"]).stdout
    line = next((ln for ln in log.splitlines() if "stopped what outlived its program" in ln and "atb-r12" in ln), "")
    assert str(rank) in line, log[-3000:]  # the rank in the container, by its marker


def test_kill_9_of_the_containers_main_process_restarts_the_whole_gang(deployed):
    tb, path = deployed
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    os.kill(box(tb, tb.hosts[0])["pid"], signal.SIGKILL)
    restarted_whole(tb, path, before, old)


def test_kill_9_of_supervisord_restarts_the_gang_once_with_no_second_copy(deployed):
    tb, path = deployed
    host = tb.hosts[1]
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    os.kill(int(tb.run(host, ["cat", f"{root(tb, host)}/run/supervisord.pid"]).stdout.strip()), signal.SIGKILL)
    restarted_whole(tb, path, before, old)
    leader = tb.hosts[0]  # the gang's leader logs why it restarted the gang
    log = tb.run(leader, ["cat", f"{root(tb, leader)}/logs/launcher-agent.log"]).stdout
    assert f"on {host.name} was not running under a new supervisord" in log, log


def children(pid: int) -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid(int(d)) == pid]


def supervision_of(tb: Testbed, host) -> list[int]:
    """supervisord, its agent, and every runner of the host with its engine client: what an OOM
    kill of the supervision tree takes, leaving the container (under the engine's conmon) and the
    ranks exec'd into it (under their exec sessions' conmon)."""
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


def test_ranks_whose_supervision_died_are_shown_orphaned_and_up_replaces_them(deployed):
    tb, path = deployed
    host = tb.hosts[1]
    before, old = barriers(tb), {box(tb, h)["id"] for h in tb.hosts}
    ranks = rank_processes(tb)
    pids = supervision_of(tb, host)
    assert len(pids) == 2 + (1 + NPUS) * 2  # supervisord, agent, 9 runners with their clients
    # all at once, as an OOM kill of the cgroup: stopped first, so none of them sees another die and
    # reacts (the agent, seeing supervisord's EOF, would recover it and remove the container); then
    # killed children first: a parent dying before its stopped children orphans their process group,
    # and the kernel sends such a group SIGHUP + SIGCONT (POSIX job control), which an OOM kill does
    # not: the runners, woken by it, stopped their ranks (seen in 1 of 3 runs, 1 to 8 ranks gone)
    for sig, order in ((signal.SIGSTOP, pids), (signal.SIGKILL, pids[::-1])):
        for pid in order:
            with contextlib.suppress(ProcessLookupError):  # gone already: with its parent, or on its own EOF
                os.kill(pid, sig)
    # the container and the 8 ranks in it live on, unsupervised
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), what="the supervision tree gone")
    assert wait_for(lambda: [c for c in containers(tb, host) if c["program"] == BOX and c["state"] == "running"],
                    what="the container living on")
    inside = {f"atb-r{k}": ranks[f"atb-r{k}"] for k in range(NPUS, 2 * NPUS)}
    assert {k: v for k, v in rank_processes(tb).items() if k in inside} == inside
    code, rows = status(tb, path)
    assert code == 1
    mine = {r["program"]: r for r in rows if r["host"] == host.name}
    assert {r["state"] for r in mine.values()} == {"ORPHANED"}
    assert all(mine[k]["orphan_pids"][0] == v[0] for k, v in inside.items()), mine  # the ranks, by marker
    assert {r["container"]["id"] for r in mine.values()} == {box(tb, host)["id"]}
    run = cli_on_testbed(tb, "up", path)
    assert run.code == 0, run.err
    assert "stopped what a dead supervisord left running" in run.err
    restarted_whole(tb, path, before, old)
    assert not any(os.path.exists(f"/proc/{v[0]}") for v in inside.values())  # replaced, not joined


def test_check_and_up_refuse_a_host_without_the_image_before_anything_starts(deployed, test_image, tmp_path):
    tb, path = deployed
    run = cli_on_testbed(tb, "check", path, "--json")
    report = json.loads(run.out)["containers"]
    assert sorted(report) == [h.name for h in tb.hosts]
    for r in report.values():  # engine and image there; what the testbed lacks said once per host
        assert r["problems"] == [] and "/dev/davinci7" in r["missing"] and "/usr/local/Ascend/driver" in r["missing"]
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


def test_down_leaves_no_container_and_no_process(deployed):
    tb, path = deployed
    run = cli_on_testbed(tb, "down", path)
    assert run.code == 0, run.err
    for h in tb.hosts:
        assert containers(tb, h) == []
    assert rank_processes(tb) == {} and exec_clients(tb) == []
    assert all(health_json(a, p) is None for a, p in endpoints(tb))
    with contextlib.suppress(Exception):
        cli_on_testbed(tb, "down", path, "--purge")
