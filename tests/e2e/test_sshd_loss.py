"""A host's sshd dies in the middle of `up` or `restart --rolling` (issue 11, points 2 and 3).

Two instances, each a gang of 2 demo ranks on h1 and h2 (a led by h1, b led by h2), with an
HTTP readiness probe. The launcher runs as its own process; when its progress output (stderr)
reaches a given line, the test SIGKILLs h2's sshd, the listener and every session, and
nothing else: supervisord, the agents and the ranks keep running, and the agents keep
talking over the agent port. Whatever the command was doing (switching the hosts, stopping
or starting a gang, waiting for one to be ready), every instance that ran before runs
afterwards, whole (both ranks answer, and either both were restarted or neither), and, once
sshd is back, `status` shows each instance's ranks started from one generation.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Run, agents_idle, host_entry, run_cli, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 2
NAME = "sshdloss"
PORTS = {"a": 18810, "b": 18820}
HOSTS = {"a": ("h1", "h2"), "b": ("h2", "h1")}  # the first host's agent leads the gang
VICTIM = "h2"
RESTORE_TIMEOUT = 180.0  # the agents notice within their 60 s tick, then back off and restart


def topology(tb: Testbed, version: str) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.97.{i}.1, 1: 10.97.{i}.2}}") for i, h in enumerate(tb.hosts))
    insts = "".join(
        f"  - name: {n}\n    hosts: [{', '.join(HOSTS[n])}]\n    devices: [{i}]\n"
        f"    rendezvous_port: {29800 + i}\n"
        f"    command: [launcher-demo-rank, --health-port, '{port}', --barrier-timeout, '60']\n"
        f"    env: {{DEMO_VERSION: '{version}'}}\n"
        f"    probe: {{http: ':{port}/health', timeout: 2, period: 0.2}}\n"
        for i, (n, port) in enumerate(PORTS.items()))
    extra = "  restart: {max: 20, window: 600}\n"
    return f"{topology_head(NAME, '/srv/launcher', extra)}hosts:\n{hosts}instances:\n{insts}"


def flags(tb: Testbed) -> list[str]:
    return ["--ssh-config", str(tb.ssh_config), "--known-hosts", str(tb.known_hosts)]


def cli(tb: Testbed, *argv: str) -> Run:
    return run_cli(*argv, *flags(tb))


def health(tb: Testbed) -> dict[tuple[str, str], int] | None:
    """(instance, host) -> the pid its rank's /health reports; None unless every rank answers."""
    out = {}
    for inst, port in PORTS.items():
        for rank, host in enumerate(HOSTS[inst]):
            url = f"http://{tb.host(host).address}:{port}/health"
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    doc = json.loads(resp.read())
            except (OSError, ValueError):
                return None
            if doc["rank"] != rank or doc["instance"] != inst:
                return None
            out[(inst, host)] = doc["pid"]
    return out


def rows(tb: Testbed, path: str) -> list[dict[str, Any]]:
    return json.loads(cli(tb, "status", path, "--json").out)


def on_one_generation(tb: Testbed, path: str) -> list[dict[str, Any]]:
    """Every rank RUNNING, each instance's ranks started from one generation, status's pids
    the ones /health reports: the rows, else []."""
    got = rows(tb, path)
    seen = health(tb)
    if not seen or len(got) != 4 or any(r["state"] != "RUNNING" for r in got):
        return []
    for inst in PORTS:
        if len({r["started_generation"] for r in got if r["instance"] == inst}) != 1:
            return []
    return got if all(seen[(r["instance"], r["host"])] == r["pid"] for r in got) else []


def whole(before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]) -> list[str]:
    """Instances of which only one rank was replaced (half a gang restarted): none, or why not."""
    bad = []
    for inst in PORTS:
        changed = {h for h in HOSTS[inst] if before[(inst, h)] != after[(inst, h)]}
        if changed and changed != set(HOSTS[inst]):
            bad.append(f"{inst}: only {sorted(changed)} restarted")
    return bad


def alive_on(tb: Testbed, host: str, pid: int) -> bool:
    """The pid runs in the host's network namespace (the testbed shares the pid namespace)."""
    try:
        return Path(f"/proc/{pid}/ns/net").stat().st_ino == Path(f"/run/netns/{tb.host(host).netns}").stat().st_ino
    except OSError:
        return False


@dataclass
class Deployed:
    dir: Path
    path: str
    version: int = 1


@pytest.fixture(scope="module")
def deployed(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    dep = Deployed(tmp_path_factory.mktemp("sshdloss"), "")
    dep.path = str(dep.dir / "topo-1.yaml")
    Path(dep.path).write_text(topology(testbed, "1"))
    try:
        run = cli(testbed, "up", dep.path)
        assert run.code == 0, run.err
        wait_for(lambda: on_one_generation(testbed, dep.path), what="a and b running")
        yield dep
    finally:
        testbed.restart_sshd(VICTIM)
        cli(testbed, "down", dep.path, "--purge")


def run_and_kill_sshd(tb: Testbed, argv: list[str], marker: str, gone: int | None = None,
                      started: str | None = None) -> tuple[int, str]:
    """Run the CLI; SIGKILL the victim's sshd once its stderr has a line with ``marker`` and,
    with ``gone``, once that pid (a rank on the victim) has exited: the gang's stop went
    through there, so the loss lands at the end of its stop or in its start; with ``started``,
    once that instance has a new rank there: the loss lands as its start answers."""
    proc = subprocess.Popen([sys.executable, "-m", "launcher", *argv, *flags(tb)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err: list[str] = []
    for line in proc.stderr:
        err.append(line)
        if marker in line and not any("[test] killed" in e for e in err):
            if gone is not None:
                wait_for(lambda: not alive_on(tb, VICTIM, gone), timeout=60, what=f"rank {gone} stopped")
            if started is not None:
                wait_for(lambda: rank_pids(tb, VICTIM, PORTS[started]) - {gone}, timeout=60,
                         what=f"{started} started again on {VICTIM}")
            tb.kill_sshd(VICTIM)
            err.append(f"[test] killed {VICTIM}'s sshd here\n")
    proc.wait(timeout=600)
    print(f"\n[sshd loss] {' '.join(argv[:1])} at {marker!r}:\n{''.join(err)}")
    assert any("[test] killed" in e for e in err), f"never saw {marker!r}:\n{''.join(err)}"
    return proc.returncode, "".join(err)


def rank_pids(tb: Testbed, host: str, port: int) -> set[int]:
    """PIDs of the demo ranks serving ``port`` in the host's network namespace (one /proc scan)."""
    out = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and alive_on(tb, host, int(entry.name)):
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"demo" in a for a in argv) and str(port).encode() in argv:
                out.add(int(entry.name))
    return out


def generation_of(tb: Testbed, host: str) -> str:
    """The generation `current` points at on the host, read from its disk (its sshd may be dead)."""
    return os.path.basename(os.readlink(tb.host(host).path(f"/srv/launcher/{NAME}/{host}/current")))


def rank_dies_after_a_failed_switch(tb: Testbed, now: dict[tuple[str, str], int]
                                    ) -> dict[tuple[str, str], int] | None:
    """A rank of a dies while the victim's sshd is still dead after the rolled-back switch: the
    gang restarts whole when its hosts are on one generation, and is held when the victim was
    in fact switched and could not be put back (the rollback said its state is unknown): None."""
    gens = {h: generation_of(tb, h) for h in HOSTS["a"]}
    os.kill(now[("a", "h1")], signal.SIGKILL)
    if len(set(gens.values())) == 1:
        return wait_for(lambda: (h := health(tb)) and h[("a", "h1")] != now[("a", "h1")] and not whole(now, h) and h,
                        timeout=RESTORE_TIMEOUT, what="a restarted whole on its one generation")
    waiting = Path(tb.host("h1").path(f"/srv/launcher/{NAME}/h1/state/waiting.json"))
    wait_for(lambda: waiting.exists() and "different generations" in waiting.read_text(), what="a held")
    assert alive_on(tb, "h2", now[("a", "h2")])  # not restarted across generations
    return None


# (command, the progress line at which sshd dies): up's switch, up's gang stop of a (its
# leader reachable), of b (its leader is the victim), restart --rolling between and in batches
# and, for the last three, once the victim's rank of that instance was stopped (its gang's
# stop done there) or, with "+", started again (its gang's start answering)
POINTS = [
    ("up", "[2/4] uploaded generation", None),
    ("up", "rolling restart of", None),
    ("up", "a is ready", None),
    ("restart", "restarted a; waiting until ready", None),
    ("restart", "a ready after", None),
    ("up", "rolling restart of", "a"),
    ("restart", "a ready after", "b"),
    ("up", "rolling restart of", "a+"),
]


def point_id(command: str, marker: str, stopped: str | None) -> str:
    after = f"-{stopped.rstrip('+')}-{'started' if stopped.endswith('+') else 'stopped'}" if stopped else ""
    return f"{command}@{marker.split()[0]}-{marker.split()[-1]}{after}"


@pytest.mark.parametrize("command,marker,stopped", POINTS, ids=[point_id(*p) for p in POINTS])
def test_every_instance_runs_whole_on_one_generation_after_sshd_dies(testbed: Testbed, deployed: Deployed,
                                                                     command: str, marker: str,
                                                                     stopped: str | None) -> None:
    # and no agent still at work from the test before (a late restart would change what `up` finds)
    roots = {h: f"/srv/launcher/{NAME}/{h}" for h in ("h1", "h2")}
    before = wait_for(lambda: agents_idle(testbed, roots) and health(testbed),
                      what="every rank answering, every agent idle, before the fault")
    gone = before[(stopped.rstrip("+"), VICTIM)] if stopped else None
    again_on = stopped.rstrip("+") if stopped and stopped.endswith("+") else None
    if command == "up":
        deployed.version += 1
        path = str(deployed.dir / f"topo-{deployed.version}.yaml")
        Path(path).write_text(topology(testbed, str(deployed.version)))
        code, err = run_and_kill_sshd(testbed, ["up", path], marker, gone, again_on)
    else:
        path = deployed.path
        code, err = run_and_kill_sshd(testbed, ["restart", path, "--rolling"], marker, gone, again_on)
    assert code == 1, err
    if "switch to" in err:  # the rollback is verified per host; the victim, SSH lost, through its agent
        assert "h1: back on generation" in err, err
        assert re.search(rf"^  {VICTIM}: back on generation \w+ \(verified through its agent", err, re.M), err
        assert generation_of(testbed, "h1") == generation_of(testbed, VICTIM)
    gang = re.search(r"^(?:error: )?(?:stop|start) ([ab]) failed on", err, re.M)
    if gang:  # a failed gang stop/start says what it left: handed to the agents, not down
        assert f"{gang[1]}: not left down: its agents restart it" in err, err
        # ... and the reachable host's agent was woken to look at once, not at its 60 s tick
        agent_log = Path(testbed.host("h1").path(f"/srv/launcher/{NAME}/h1/logs/launcher-agent.log"))
        assert re.search(rf"woken to look now: ([ab],)*{gang[1]}\b", agent_log.read_text()), agent_log.read_text()
    if command == "restart":  # and where the roll left every instance
        assert "roll stopped: restarted and ready: " in err and "not restarted (running as before): " in err, err
    elif gang:
        assert "; not restarted (still on their previous config, or not started): " in err, err

    # sshd still dead: the agents alone bring every instance back whole
    after = wait_for(lambda: (h := health(testbed)) and not whole(before, h) and h, timeout=RESTORE_TIMEOUT,
                     what=f"a and b whole again with {VICTIM}'s sshd dead")
    assert not whole(before, after)
    assert all(alive_on(testbed, host, pid) for (_, host), pid in after.items())
    ps = testbed.run("h1", ["ps", "-o", "pid=", "-p", ",".join(str(p) for (_, h), p in after.items() if h == "h1")])
    assert len(ps.stdout.split()) == 2, ps

    held = "switch to" in err and rank_dies_after_a_failed_switch(testbed, after) is None

    testbed.restart_sshd(VICTIM)
    if held:  # until an up makes the hosts agree, status says why and exits 1
        table = cli(testbed, "status", path)
        assert table.code == 1 and "hosts on different generations" in table.out, table.out
    else:
        wait_for(lambda: on_one_generation(testbed, path), timeout=RESTORE_TIMEOUT,
                 what="status: every rank RUNNING, each instance on one generation")
    again = cli(testbed, "up", path)
    assert again.code == 0, again.err
    wait_for(lambda: on_one_generation(testbed, path), what="a and b running after the next up")
    deployed.path = path
