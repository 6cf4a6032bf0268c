"""Rolling restart end to end on the network-namespace testbed, watched from outside.

Three instances, each a gang of 2 demo ranks on 2 hosts (a: h1+h2, b: h2+h3, c: h3+h4), each
with an HTTP readiness probe on its own health port. While the launcher rolls them (as a
separate process, as an operator runs it), a probe client in this process polls the /health
of every rank of every instance every ~50 ms; an instance is unavailable in a sample when any
of its ranks does not answer. The invariant is the issue's: never more than K unavailable in
one sample. The figures (longest outage, failed probes) go to stdout and to FIGURES.

The same client watches `up` of a changed env on all three (the rolling strategy).

b's probe also runs a command on its hosts that checks a file the rank needs (its "weights");
removing that file makes b fail readiness at restart time without a new generation, which is
how the stop-at-first-failure case is made, and how the lock test gets an operation that
holds the deployment lock for as long as the test needs. The stale-lock case SIGKILLs a
holder and expects the next command to take the lock over with a warning.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ssh_flags, cli_on_testbed as cli, ROOT, topology_head, host_entry, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 4
NAME = "roll"
DEPLOY = "/srv/launcher"
# instance -> (host indexes, device, health port)
LAYOUT: dict[str, tuple[tuple[int, int], int, int]] = {
    "a": ((0, 1), 0, 18710), "b": ((1, 2), 1, 18720), "c": ((2, 3), 0, 18730)}
WEIGHTS = "/tmp/weights-b.ok"  # on b's hosts; its command probe needs it
FIGURES = Path("/tmp/rolling-e2e-figures.json")
POLL_EVERY = 0.05
POLL_TIMEOUT = 1.0  # short, yet no false outage when the 2 CPUs are busy


def topology(tb: Testbed, demo_env: str = "1") -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1, 1: 10.98.{i}.2}}") for i, h in enumerate(tb.hosts))
    insts = ""
    for n, (idx, dev, port) in LAYOUT.items():
        extra = f", command: [test, -e, {WEIGHTS}]" if n == "b" else ""
        insts += (f"  - name: {n}\n    hosts: [{', '.join(tb.hosts[i].name for i in idx)}]\n"
                  f"    devices: [{dev}]\n    rendezvous_port: {29700 + ord(n) - ord('a')}\n"
                  f"    command: [launcher-demo-rank, --health-port, '{port}', --barrier-timeout, '60']\n"
                  f"    env: {{DEMO_VERSION: '{demo_env}'}}\n"
                  f"    probe: {{http: ':{port}/health', timeout: 2, period: 0.2{extra}}}\n")
    return f"""\
{topology_head(NAME, DEPLOY)}hosts:
{hosts}instances:
{insts}"""




def cli_proc(tb: Testbed, *argv: str) -> subprocess.Popen[str]:
    """The launcher as its own process: the probe client's timing is not shared with it, and it can be killed."""
    return subprocess.Popen([sys.executable, "-m", "launcher", *argv, *ssh_flags(tb)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def pids(tb: Testbed, path: str) -> dict[tuple[str, str], int]:
    rows = json.loads(cli(tb, "status", path, "--json").out)
    return {(r["instance"], r["host"]): r["pid"] for r in rows}


def states(tb: Testbed, path: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in json.loads(cli(tb, "status", path, "--json").out):
        out.setdefault(r["instance"], set()).add(r["state"])
    return out


def endpoints(tb: Testbed) -> dict[str, list[str]]:
    return {n: [f"http://{tb.hosts[i].address}:{port}/health" for i in idx] for n, (idx, _, port) in LAYOUT.items()}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=POLL_TIMEOUT) as resp:
            return resp.status == 200
    except OSError:
        return False


def all_healthy(tb: Testbed) -> bool:
    return all(healthy(u) for urls in endpoints(tb).values() for u in urls)


@dataclass
class Sample:
    at: float
    failed: dict[str, int]  # instance -> how many of its ranks did not answer


@dataclass
class ProbeClient:
    """Polls every rank of every instance together, every POLL_EVERY s, in a background thread."""
    urls: dict[str, list[str]]
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ProbeClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _run(self) -> None:
        flat = [(n, u) for n, urls in self.urls.items() for u in urls]
        # all ranks at once, so one sample is one moment (not 6 requests spread over time)
        with ThreadPoolExecutor(len(flat)) as pool:
            while not self._stop.is_set():
                t = time.monotonic()
                oks = list(pool.map(lambda nu: healthy(nu[1]), flat))
                failed = {n: 0 for n in self.urls}
                for (n, _), ok in zip(flat, oks):
                    failed[n] += not ok
                self.samples.append(Sample(t, failed))
                self._stop.wait(max(0.0, POLL_EVERY - (time.monotonic() - t)))

    def figures(self) -> dict[str, Any]:
        """Most instances down in one sample, each instance's longest outage and failed probes."""
        longest: dict[str, float] = {}
        for n in self.urls:
            best, since = 0.0, None
            for s in self.samples:
                down = s.failed[n] > 0
                if down and since is None:
                    since = s.at
                elif not down and since is not None:
                    best, since = max(best, s.at - since), None  # until the first good sample: an upper bound
            if since is not None:
                best = max(best, self.samples[-1].at - since)
            longest[n] = round(best, 3)
        failed = {n: sum(s.failed[n] for s in self.samples) for n in self.urls}
        return {"samples": len(self.samples),
                "seconds_watched": round(self.samples[-1].at - self.samples[0].at, 3) if self.samples else 0,
                "max_unavailable_at_once": max((sum(v > 0 for v in s.failed.values()) for s in self.samples),
                                               default=0),
                "longest_unavailable_s": longest, "longest_unavailable_any_s": max(longest.values(), default=0),
                "unavailable_samples": {n: sum(s.failed[n] > 0 for s in self.samples) for n in self.urls},
                "failed_probes": failed, "failed_probes_total": sum(failed.values())}


def record(case: str, figures: dict[str, Any]) -> None:
    print(f"\n[rolling e2e] {case}: {json.dumps(figures)}")
    doc = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    doc[case] = figures
    FIGURES.write_text(json.dumps(doc, indent=2) + "\n")


@dataclass
class Deployment:
    path: str  # the topology now deployed (a test that `up`s a change moves it on)
    dir: Path


@pytest.fixture(scope="module")
def deployed(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The three instances up and healthy; `down --purge` at the end."""
    FIGURES.unlink(missing_ok=True)
    for h in testbed.hosts[1:3]:
        Path(h.path(WEIGHTS)).write_text("ok\n")
    dep = Deployment("", tmp_path_factory.mktemp("roll"))
    dep.path = str(dep.dir / "topo.yaml")
    Path(dep.path).write_text(topology(testbed))
    try:
        run = cli(testbed, "up", dep.path)
        assert run.code == 0, run.err
        wait_for(lambda: all_healthy(testbed), what="every rank of a, b, c past its barrier")
        yield dep
    finally:
        cli(testbed, "down", dep.path, "--purge")


def lock_file(tb: Testbed) -> Path:
    return Path(tb.hosts[0].path(f"{DEPLOY}/{NAME}/{tb.hosts[0].name}/state/lock.json"))


def lock_holder(tb: Testbed) -> dict[str, Any] | None:
    """The lock's holder record on the first host, while someone holds it."""
    try:
        return json.loads(lock_file(tb).read_text()).get("holder")
    except (OSError, ValueError):
        return None


def watched(tb: Testbed, *argv: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run `launcher ARGV` while the probe client watches every rank, from before until after."""
    with ProbeClient(endpoints(tb)) as probes:
        time.sleep(0.5)  # a baseline before the command
        proc = cli_proc(tb, *argv)
        out, err = proc.communicate(timeout=600)
        time.sleep(0.5)  # and after it: the last instance answers, not only its probe
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), probes.figures() | {
        "baseline_ok": all(v == 0 for s in probes.samples[:3] for v in s.failed.values()),
        "end_ok": all(v == 0 for v in probes.samples[-1].failed.values())}


@pytest.mark.parametrize("k", [1, 2])
def test_rolling_restart_never_more_than_k_unavailable(testbed: Testbed, deployed: Deployment, k: int) -> None:
    path = deployed.path
    wait_for(lambda: all_healthy(testbed), what="every rank healthy before the roll")
    before = pids(testbed, path)
    run, figures = watched(testbed, "restart", path, "--rolling", "--max-unavailable", str(k), "--json")
    record(f"restart --rolling --max-unavailable {k}", figures)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["restarted"] == ["a", "b", "c"] and report["failed"] is None and report["untouched"] == []
    assert figures["baseline_ok"] and figures["end_ok"], figures
    # the probe client saw every restart, so it could have seen a violation
    assert all(v > 0 for v in figures["unavailable_samples"].values()), figures
    assert figures["max_unavailable_at_once"] <= k, figures
    after = pids(testbed, path)
    assert set(after) == set(before) and all(after[key] != before[key] for key in before), (before, after)
    assert all(s == {"RUNNING"} for s in states(testbed, path).values())


def test_roll_stops_at_an_instance_that_fails_readiness(testbed: Testbed, deployed: Deployment) -> None:
    path = deployed.path
    wait_for(lambda: all_healthy(testbed), what="every rank healthy before the roll")
    before = pids(testbed, path)
    b_hosts = testbed.hosts[1:3]
    for h in b_hosts:  # b's weights vanish: b restarts but its probe never passes
        Path(h.path(WEIGHTS)).unlink()
    try:
        proc = cli_proc(testbed, "restart", path, "--rolling", "--ready-timeout", "8")
        out, err = proc.communicate(timeout=300)
        as_json = cli(testbed, "status", path, "--json")
    finally:
        for h in b_hosts:
            Path(h.path(WEIGHTS)).write_text("ok\n")
    assert proc.returncode == 1, err
    assert out.startswith("rolling restart stopped: b did not become ready ("), out
    for h in b_hosts:  # the reason is the probe's own: which host, which command, its exit status
        assert f"{h.name}: command test -e {WEIGHTS}: exit 1" in out, out
    assert "untouched: c" in out and "roll stopped; untouched: c" in err, err
    after = {(r["instance"], r["host"]): r for r in json.loads(as_json.out)}
    hosts = {n: [testbed.hosts[i].name for i in idx] for n, (idx, _, _) in LAYOUT.items()}
    assert all(after[("a", h)]["pid"] != before[("a", h)] and after[("a", h)]["state"] == "RUNNING"
               for h in hosts["a"])
    assert all(after[("b", h)]["pid"] != before[("b", h)] for h in hosts["b"])  # restarted, never ready
    assert all(after[("c", h)]["pid"] == before[("c", h)] for h in hosts["c"])  # untouched
    # the weights are back: the same roll passes again
    again = cli(testbed, "restart", path, "--rolling", "--instance", "b", "--instance", "c", "--ready-timeout", "60")
    assert again.code == 0, again.err


def test_second_operation_is_refused_while_one_holds_the_lock(testbed: Testbed, deployed: Deployment) -> None:
    path = deployed.path
    b_hosts = testbed.hosts[1:3]
    # the first operation is a roll of b that waits for b's weights: it holds the lock until the
    # test puts them back, however slowly the refused commands run on a busy machine
    for h in b_hosts:
        Path(h.path(WEIGHTS)).unlink()
    first = cli_proc(testbed, "restart", path, "--rolling", "--instance", "b", "--ready-timeout", "300")
    try:
        holder = wait_for(lambda: lock_holder(testbed), timeout=60, what="the roll's lock on h1")
        assert holder["pid"] == first.pid and holder["command"] == "restart --rolling"
        for argv in (("up", path), ("restart", path, "--instance", "a"), ("down", path)):
            refused = cli(testbed, *argv)
            assert refused.code == 1, (argv, refused.err)
            assert "deployment is busy: `restart --rolling` by " in refused.err
            assert f"(pid {first.pid}, since " in refused.err and f"holds its lock on {testbed.hosts[0].name}" \
                in refused.err
        assert first.poll() is None  # it held the lock throughout
    finally:
        for h in b_hosts:
            Path(h.path(WEIGHTS)).write_text("ok\n")
        try:
            out, err = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert first.returncode == 0, err
    assert "rolling restart: b restarted and ready" in out
    assert lock_holder(testbed) is None  # released
    run = cli(testbed, "up", path, "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["started"] == []  # nothing changed: the refused `down` really did nothing
    wait_for(lambda: all_healthy(testbed), what="every rank healthy after the refused commands")


def test_stale_lock_of_a_killed_holder_is_taken_over(testbed: Testbed, deployed: Deployment) -> None:
    path = deployed.path
    victim = cli_proc(testbed, "restart", path, "--rolling")
    try:
        wait_for(lambda: lock_holder(testbed), timeout=60, what="the roll's lock on h1")
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate()  # reaped: a zombie would still count as alive
    assert lock_holder(testbed) is not None  # the killed holder could not release it
    run = cli(testbed, "restart", path, "--rolling", "--ready-timeout", "60")
    assert run.code == 0, run.err
    assert ("warning: taking over a stale lock of `restart --rolling` by " in run.err
            and f"its process {victim.pid} on " in run.err and " is gone" in run.err), run.err
    assert lock_holder(testbed) is None
    wait_for(lambda: all_healthy(testbed), what="every rank healthy after the takeover's roll")


@pytest.mark.parametrize(("flags", "k"), [((), 1), (("--strategy", "rolling", "--max-unavailable", "2"), 2)],
                         ids=["default-strategy", "rolling-k2"])
def test_up_of_a_changed_env_rolls_never_more_than_k_unavailable(testbed: Testbed, deployed: Deployment,
                                                                 flags: tuple[str, ...], k: int) -> None:
    wait_for(lambda: all_healthy(testbed), what="every rank healthy before the up")
    before = pids(testbed, deployed.path)
    path = str(deployed.dir / f"topo-up-{k}.yaml")
    Path(path).write_text(topology(testbed, demo_env=f"up-{k}"))  # every instance's env changes
    run, figures = watched(testbed, "up", path, *flags, "--json")
    deployed.path = path
    # without --strategy: auto, which rolls (K=1) as every instance has a readiness probe
    record(f"up {' '.join(flags) or '(default strategy)'}, env of a, b, c changed", figures)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert sorted(report["started"]) == ["a", "b", "c"], report
    assert figures["baseline_ok"] and figures["end_ok"], figures
    assert all(v > 0 for v in figures["unavailable_samples"].values()), figures
    assert figures["max_unavailable_at_once"] <= k, figures
    after = json.loads(cli(testbed, "status", path, "--json").out)
    assert all(r["pid"] != before[(r["instance"], r["host"])] and r["state"] == "RUNNING" for r in after), after
    assert {r["generation"] for r in after} == {report["generation"]}
