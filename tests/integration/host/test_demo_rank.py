"""launcher.host.demo_rank as real processes on 127.0.0.1: env, ranktable, barrier, health, signals."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from launcher.host.demo_rank import BarrierRejected, EnvError, Identity, TableError, check_go, check_table, parse_env
from tests.helpers import ROOT, datadist_2p2d

READY_S = 20.0
EXIT_S = 30.0
RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "RANKTABLEFILE", "RANK_TABLE_FILE", "DEVICE_ID",
             "LAUNCHER_SERVER_ID", "LAUNCHER_DEVICE_IP", "MASTER_ADDR", "MASTER_PORT", "LAUNCHER_INSTANCE",
             "LAUNCHER_HOST")
Layout = list[tuple[str, str, int, str]]  # per rank: (host, server_id, device_id, device_ip)
# 2 servers x 2 devices, as the launcher lays them out
LAYOUT: Layout = [("node-a", "127.0.0.1", 0, "10.213.100.1"), ("node-a", "127.0.0.1", 1, "10.213.100.2"),
                  ("node-b", "127.0.0.2", 0, "10.213.101.1"), ("node-b", "127.0.0.2", 1, "10.213.101.2")]


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranktable(layout: Layout, status: str = "completed") -> dict[str, Any]:
    """An HCCL v1.0 table for `layout`, every value a string."""
    servers: list[dict[str, Any]] = []
    for rank, (_host, server_id, dev, ip) in enumerate(layout):
        if not servers or servers[-1]["server_id"] != server_id:
            servers.append({"device": [], "server_id": server_id})
        servers[-1]["device"].append({"device_id": str(dev), "device_ip": ip, "rank_id": str(rank)})
    return {"server_count": str(len(servers)), "server_list": servers, "status": status, "version": "1.0"}


def write_json(path: Path, doc: Any) -> None:
    """Write atomically, as the launcher does, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


class Rank:
    """One running demo_rank process; its stderr is collected by a thread."""

    def __init__(self, env: dict[str, str], args: list[str]):
        self.health_port: int | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "launcher.host.demo_rank", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def err(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, found: Callable[[str], bool], what: str, timeout: float = READY_S) -> None:
        """Block until a stderr line satisfies `found`; fail with the log on exit or timeout."""
        end = time.monotonic() + timeout
        with self._changed:
            while not any(found(line) for line in self.lines):
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    self._changed.wait(0.2)  # the pump may still hold the last lines
                    if any(found(line) for line in self.lines):
                        return
                    pytest.fail(f"no {what} (exit {self.proc.poll()}):\n{self.err}")
                self._changed.wait(min(left, 0.2))

    def wait_ready(self, timeout: float = READY_S) -> None:
        """Block until the line `ready`."""
        self.wait_for(lambda line: line == "ready", "`ready`", timeout)

    def wait_exit(self, timeout: float = EXIT_S) -> int:
        """The exit code; fail with the log on timeout."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s:\n{self.err}")
        time.sleep(0.05)  # the pump may still hold the last line
        return code

    def health(self, path: str = "/health") -> tuple[int, Any]:
        """GET path on this rank's health port: (status, parsed JSON body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[Callable[[Layout], World]]:
    """Make worlds of any layout; every process they started is killed afterwards."""
    made: list[World] = []

    def make(layout: Layout) -> World:
        made.append(World(tmp_path / f"world{len(made)}", layout))
        return made[-1]

    try:
        yield make
    finally:
        for w in made:
            w.kill()


@pytest.fixture
def world(worlds: Callable[[Layout], World]) -> World:
    """The 2 servers x 2 devices world."""
    return worlds(LAYOUT)


class World:
    """Env, table and processes for one demo instance."""

    def __init__(self, tmp_path: Path, layout: Layout = LAYOUT):
        self.layout = layout
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.table = tmp_path / "ranktable.json"
        write_json(self.table, ranktable(layout))
        self.master_port = free_port()
        self.started: list[Rank] = []

    def env(self, rank: int, **override: str | None) -> dict[str, str]:
        """The env the launcher gives `rank` (override: None removes a variable)."""
        host, server_id, dev, ip = self.layout[rank]
        local = sum(1 for h, *_ in self.layout[:rank] if h == host)
        env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
        env.update(PYTHONPATH=str(ROOT), RANK=str(rank), LOCAL_RANK=str(local), WORLD_SIZE=str(len(self.layout)),
                   RANKTABLEFILE=str(self.table), RANK_TABLE_FILE=str(self.table), DEVICE_ID=str(dev),
                   LAUNCHER_SERVER_ID=server_id, LAUNCHER_DEVICE_IP=ip, MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(self.master_port), LAUNCHER_INSTANCE="demo", LAUNCHER_HOST=host)
        for k, v in override.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def start(self, rank: int, *args: str, **override: str | None) -> Rank:
        """Start `rank` with its own free health port (every "host" here shares one loopback)."""
        env = self.env(rank, **override)
        port = free_port()
        r = Rank(env, ["--health-host", "127.0.0.1", "--health-port", str(port - int(env.get("LOCAL_RANK", "0"))),
                       *args])
        r.health_port = port
        self.started.append(r)
        return r

    def kill(self) -> None:
        """Kill whatever is still running."""
        for r in self.started:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait(10)


def test_four_ranks_meet_serve_health_and_stop_on_sigterm(world: World) -> None:
    ranks = {r: world.start(r) for r in (3, 1, 2, 0)}  # rank 0 last: peers must wait for it
    for r in ranks.values():
        r.wait_ready()
    for rank, r in sorted(ranks.items()):
        status, doc = r.health()
        host, _sid, dev, _ip = LAYOUT[rank]
        assert status == 200
        assert doc["rank"] == rank and doc["world_size"] == 4 and doc["device_id"] == dev
        assert doc["host"] == host and doc["instance"] == "demo" and doc["pid"] == r.proc.pid
        assert doc["local_rank"] == rank % 2 and isinstance(doc["barrier_passed_at"], float)
        assert r.health("/nope")[0] == 404
        head = urllib.request.Request(f"http://127.0.0.1:{r.health_port}/health", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b""
    assert "barrier passed: 4/4 ranks" in ranks[0].err
    assert "[demo_rank rank=2 host=node-b]" in ranks[2].err
    for r in ranks.values():
        r.proc.send_signal(signal.SIGTERM)
    for r in ranks.values():
        assert r.wait_exit() == 0, r.err


def test_device_id_disagreeing_with_the_table_exits_3(world: World) -> None:
    r = world.start(2, DEVICE_ID="1")
    assert r.wait_exit() == 3, r.err
    assert "device_id: expected '1' (DEVICE_ID), found '0'" in r.err
    assert "rank 2" in r.err


@pytest.mark.parametrize("var", ["RANK", "WORLD_SIZE", "MASTER_PORT", "LAUNCHER_DEVICE_IP"])
def test_missing_env_var_exits_2_naming_it(world: World, var: str) -> None:
    r = world.start(1, **{var: None})
    assert r.wait_exit() == 2, r.err
    assert f"{var} is not set" in r.err
    assert len(r.lines) == 1, r.err  # one clear line


def test_missing_ranktable_file_exits_2_naming_the_variable(world: World) -> None:
    r = world.start(1, RANKTABLEFILE=str(world.table) + ".missing")
    assert r.wait_exit() == 2, r.err
    assert f"RANKTABLEFILE={world.table}.missing: no such file" in r.err


def test_invalid_env_var_exits_2_naming_it(world: World) -> None:
    r = world.start(1, RANK="4")
    assert r.wait_exit() == 2, r.err
    assert "RANK=4 is out of range for WORLD_SIZE=4" in r.err


def test_a_world_of_one_with_only_rank_table_file_passes_at_once(worlds: Callable[[Layout], World]) -> None:
    r = worlds(LAYOUT[:1]).start(0, RANKTABLEFILE=None)
    r.wait_ready()
    assert r.health()[1]["world_size"] == 1
    r.proc.send_signal(signal.SIGINT)
    assert r.wait_exit() == 0, r.err


def test_sigterm_while_health_requests_keep_its_threads_busy_stops_it(worlds: Callable[[Layout], World]) -> None:
    # A SIGTERM the kernel hands to a helper thread (likely while requests keep them busy) must
    # still run the handler: Python runs it only in the main thread, asleep until it ends.
    # Once in about 3 tries it did not: the rank lived until supervisord's SIGKILL.
    for attempt in range(8):
        r = worlds(LAYOUT[:1]).start(0)
        r.wait_ready()
        stop = threading.Event()

        def poll(port: int = r.health_port) -> None:  # as a load balancer does, from several clients
            while not stop.is_set():
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                except (OSError, http.client.HTTPException):  # the rank going away mid-reply
                    pass
        clients = [threading.Thread(target=poll, daemon=True) for _ in range(3)]
        for c in clients:
            c.start()
        try:
            time.sleep(0.2)
            r.proc.send_signal(signal.SIGTERM)
            assert r.wait_exit() == 0, f"attempt {attempt}: {r.err}"
            assert "SIGTERM received: stopped" in r.err
        finally:
            stop.set()
            for c in clients:
                c.join()


def test_a_rank_that_never_starts_makes_rank_0_exit_4_naming_it(world: World) -> None:
    # Only rank 0 has the short timeout, so it is the one that gives up (peers may start late).
    ranks = [world.start(0, "--barrier-timeout", "2")]
    ranks += [world.start(r, "--barrier-timeout", "30") for r in (1, 2)]
    assert ranks[0].wait_exit() == 4, ranks[0].err
    assert "missing ranks [3]" in ranks[0].err
    for r in ranks[1:]:  # rank 0 tells the waiting peers why it gave up
        assert r.wait_exit() == 4, r.err


def test_peer_without_rank_0_reports_it_unreachable(world: World) -> None:
    r = world.start(1, "--barrier-timeout", "1")
    assert r.wait_exit() == 4, r.err
    assert f"rank 0 at 127.0.0.1:{world.master_port} unreachable" in r.err


def test_sigterm_while_waiting_for_the_barrier_exits_0(world: World) -> None:
    r = world.start(1, "--barrier-timeout", "60")
    r.wait_for(lambda line: "not reachable yet" in line, "retrying to reach rank 0")
    r.proc.send_signal(signal.SIGTERM)
    assert r.wait_exit() == 0, r.err
    assert "SIGTERM received: stopped" in r.err


def test_rank_0_waits_for_a_master_port_still_held_by_a_previous_incarnation(
        worlds: Callable[[Layout], World]) -> None:
    w = worlds(LAYOUT[:2])
    with socket.create_server(("127.0.0.1", w.master_port)):
        zero = w.start(0)
        zero.wait_for(lambda line: "is in use" in line, "a retry on the busy port")
    one = w.start(1)
    zero.wait_ready()
    one.wait_ready()


def test_two_ranks_claiming_the_same_rank_make_rank_0_exit_3(world: World) -> None:
    zero = world.start(0, "--barrier-timeout", "20")
    ones = [world.start(1, "--barrier-timeout", "20") for _ in range(2)]
    assert zero.wait_exit() == 3, zero.err
    assert "duplicate rank 1" in zero.err
    for r in ones:
        assert r.wait_exit() == 3, r.err


def test_a_foreign_instance_is_rejected(world: World) -> None:
    zero = world.start(0, "--barrier-timeout", "20")
    other = world.start(1, "--barrier-timeout", "20", LAUNCHER_INSTANCE="other")
    assert zero.wait_exit() == 3, zero.err
    assert "names instance 'other', expected 'demo'" in zero.err
    assert other.wait_exit() == 3, other.err


def test_an_initializing_table_is_waited_for(world: World) -> None:
    write_json(world.table, ranktable(LAYOUT, status="initializing"))
    ranks = [world.start(r) for r in range(4)]
    for r in ranks:  # every rank has seen the unfinished table before it completes
        r.wait_for(lambda line: "status is 'initializing'" in line, "wait for the table")
    time.sleep(1.0)
    write_json(world.table, ranktable(LAYOUT))
    for r in ranks:
        r.wait_ready()


def test_a_table_that_never_completes_exits_3(world: World) -> None:
    write_json(world.table, ranktable(LAYOUT, status="initializing"))
    r = world.start(0, "--table-timeout", "0.5")
    assert r.wait_exit() == 3, r.err
    assert "status is 'initializing', expected 'completed'" in r.err


def test_fail_barrier_exits_5_and_crash_after_exits_17(worlds: Callable[[Layout], World]) -> None:
    w = worlds(LAYOUT[:1])
    assert w.start(0, "--fail-barrier").wait_exit() == 5
    r = w.start(0, "--crash-after", "0.5")
    r.wait_ready()
    assert r.wait_exit() == 17, r.err


def test_version() -> None:
    out = subprocess.run([sys.executable, "-m", "launcher.host.demo_rank", "--version"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("demo_rank ")


# --- the pure checks, called directly --------------------------------------------------------
def ident(**kw: Any) -> Identity:
    base = dict(rank=3, local_rank=1, world_size=4, ranktable="t.json", ranktable_var="RANKTABLEFILE",
                device_id=1, server_id="127.0.0.2", device_ip="10.213.101.2", master_addr="127.0.0.1",
                master_port=29610, instance="demo", host="node-b")
    base.update(kw)
    return Identity(**base)


def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = ranktable(LAYOUT)
    change(doc)
    return doc


@pytest.mark.parametrize("doc, ident_kw, message", [
    (edit(lambda d: d["server_list"][1]["device"].pop()), {}, "holds 3 devices, expected 4 (WORLD_SIZE)"),
    (edit(lambda d: d["server_list"][1]["device"][0].update(rank_id="3")), {},
     "server_list[1].device[0].rank_id: expected '2'"),
    (edit(lambda d: d["server_list"][1]["device"][1].update(rank_id=3)), {}, "expected a string, found 3"),
    (ranktable(LAYOUT), {"server_id": "127.0.0.1"}, "server_id: expected '127.0.0.1' (LAUNCHER_SERVER_ID), "
                                                   "found '127.0.0.2'"),
    (ranktable(LAYOUT), {"device_ip": "10.0.0.9"}, "device_ip: expected '10.0.0.9'"),
    (edit(lambda d: d["server_list"][1]["device"][1].update(device_id="0")), {}, "listed twice"),
    (edit(lambda d: d.update(server_count="3")), {}, "server_count: expected '2'"),
    ({"server_group_list": []}, {}, "PD global table"),
])
def test_check_table_rejects(doc: dict[str, Any], ident_kw: dict[str, Any], message: str) -> None:
    with pytest.raises(TableError) as exc:
        check_table(doc, ident(**ident_kw))
    assert message in str(exc.value)


def test_check_table_accepts_a_pd_local_table() -> None:
    doc = ranktable(LAYOUT)
    for s in doc["server_list"]:
        s["server_ip"] = s["server_id"]
    doc.update(group_id="0")
    assert check_table(doc, ident()).where == "server_list[1].device[1]"


def test_parse_env_names_every_bad_variable() -> None:
    with pytest.raises(EnvError) as exc:
        parse_env({"RANK": "x", "MASTER_PORT": "70000"})
    text = str(exc.value)
    assert "RANK='x' is not an integer" in text and "MASTER_PORT='70000'" in text
    assert "LAUNCHER_HOST is not set" in text


def test_check_go_refuses_a_world_of_another_size() -> None:
    three = [{"rank": r} for r in range(3)]
    with pytest.raises(BarrierRejected) as exc:
        check_go({"go": True, "world": three}, ident())
    assert "expected 0..3 (WORLD_SIZE=4)" in str(exc.value)
    assert check_go({"go": True, "world": three + [{"rank": 3}]}, ident())[3] == {"rank": 3}


# --- LLM-DataDist link (LAUNCHER_DATADIST_FILE) ------------------------------------------------
# The cluster files come from the real expansion of a topology: 2 prompts on node-p, 2 decoders on
# node-d, every decoder linked to every prompt (configs/llm-datadist-link.yaml's shape). Device IPs
# are loopback addresses, so the prompts listen and the decoders link from their own device IP.
DD_PORT = free_port()
DD_TOPOLOGY = f"""\
version: 1
name: dd
hosts:
  - {{name: node-p, address: 127.0.0.1, devices: {{0: 127.0.0.11, 1: 127.0.0.12}}}}
  - {{name: node-d, address: 127.0.0.2, devices: {{0: 127.0.0.21, 1: 127.0.0.22}}}}
instances:
  - {{name: prompt-0, hosts: [node-p], devices: [0], command: [x]}}
  - {{name: prompt-1, hosts: [node-p], devices: [1], command: [x]}}
  - {{name: decoder-0, hosts: [node-d], devices: [0], command: [x]}}
  - {{name: decoder-1, hosts: [node-d], devices: [1], command: [x]}}
{datadist_2p2d(DD_PORT)}"""
# instance -> (layout entry, cluster id)
DD_RANKS = {"prompt-0": (("node-p", "127.0.0.1", 0, "127.0.0.11"), 1),
            "prompt-1": (("node-p", "127.0.0.1", 1, "127.0.0.12"), 2),
            "decoder-0": (("node-d", "127.0.0.2", 0, "127.0.0.21"), 3),
            "decoder-1": (("node-d", "127.0.0.2", 1, "127.0.0.22"), 4)}


class DataDistWorlds:
    """One single-rank world per instance, each with the cluster file the launcher renders."""

    def __init__(self, tmp_path: Path, worlds: Callable[[Layout], World]):
        from launcher.core.pipeline import compile_text
        plan = compile_text(DD_TOPOLOGY).plan
        self.files = {f.path: f.content for hp in plan.hosts for f in hp.files}
        self.dir = tmp_path / "dd"
        self.dir.mkdir()
        self.worlds = {name: worlds([entry]) for name, (entry, _) in DD_RANKS.items()}

    def start(self, instance: str, *args: str, doc: Any = None) -> Rank:
        cluster = DD_RANKS[instance][1]
        path = self.dir / f"cluster_{cluster}.json"
        if doc is None:
            path.write_bytes(self.files[f"llm_datadist/cluster_{cluster}.json"])
        else:
            write_json(path, doc)
        return self.worlds[instance].start(0, *args, LAUNCHER_DATADIST_FILE=str(path),
                                           LAUNCHER_DATADIST_CLUSTER_ID=str(cluster))

    def doc(self, cluster: int) -> dict[str, Any]:
        return json.loads(self.files[f"llm_datadist/cluster_{cluster}.json"])


@pytest.fixture
def dd(tmp_path: Path, worlds: Callable[[Layout], World]) -> DataDistWorlds:
    return DataDistWorlds(tmp_path, worlds)


def _stamp(line: str) -> float:
    return float(line.rsplit("t=", 1)[1].rstrip(")"))


def test_prompts_listen_and_decoders_link_to_every_prompt_without_retries(dd: DataDistWorlds) -> None:
    prompts = [dd.start(p) for p in ("prompt-0", "prompt-1")]
    for p in prompts:
        p.wait_ready()
    decoders = {d: dd.start(d, "--link-retry", "0") for d in ("decoder-0", "decoder-1")}
    for d in decoders.values():
        d.wait_ready()
    listening = {f"127.0.0.1{k}:{DD_PORT}": _stamp(next(ln for ln in p.lines if "datadist: listening on" in ln))
                 for k, p in ((1, prompts[0]), (2, prompts[1]))}
    for name, d in decoders.items():
        cluster = DD_RANKS[name][1]
        linked = [ln for ln in d.lines if "datadist: linked" in ln]
        assert len(linked) == 2, d.err
        for k in (1, 2):
            addr = f"127.0.0.1{k}:{DD_PORT}"
            line = next(ln for ln in linked if f"datadist: linked pd_comm_{k}_{cluster} to {addr}" in ln)
            assert listening[addr] < _stamp(line)
        status, doc = d.health()
        assert status == 200
        assert doc["datadist"] == {"cluster_id": cluster, "role": "decoder", "links": [
            {"comm_name": f"pd_comm_1_{cluster}", "remote_cluster_id": 1, "peer": f"127.0.0.11:{DD_PORT}"},
            {"comm_name": f"pd_comm_2_{cluster}", "remote_cluster_id": 2, "peer": f"127.0.0.12:{DD_PORT}"}]}
    # the prompt side saw each link come from the decoder's own device IP
    accepted = [ln for ln in prompts[0].lines if "datadist: accepted link" in ln]
    assert any("pd_comm_1_3 from cluster 3 at 127.0.0.21:" in ln for ln in accepted), prompts[0].err
    assert any("pd_comm_1_4 from cluster 4 at 127.0.0.22:" in ln for ln in accepted), prompts[0].err
    assert prompts[1].health()[1]["datadist"] == {"cluster_id": 2, "role": "prompt",
                                                  "listening": f"127.0.0.12:{DD_PORT}"}


def test_a_decoder_without_retries_started_before_its_prompt_exits_7(dd: DataDistWorlds) -> None:
    d = dd.start("decoder-0", "--link-retry", "0")
    assert d.wait_exit() == 7, d.err
    assert (f"link pd_comm_1_3: cannot reach prompt cluster 1 at 127.0.0.11:{DD_PORT} after 1 attempt(s)"
            in d.err)
    assert "retry" not in d.err


def test_a_decoder_with_retries_links_to_a_prompt_that_starts_late(dd: DataDistWorlds) -> None:
    d = dd.start("decoder-0", "--link-retry", "40", "--link-timeout", "1")
    d.wait_for(lambda line: "retry 1/40" in line, "a first failed link attempt")
    for p in ("prompt-0", "prompt-1"):
        dd.start(p)
    d.wait_ready()
    assert sum("datadist: linked" in ln for ln in d.lines) == 2


def test_a_prompt_refuses_a_link_it_is_not_in(dd: DataDistWorlds) -> None:
    dd.start("prompt-0").wait_ready()
    doc = dd.doc(3)
    doc["links"][0]["comm_name"] = "pd_comm_other"
    d = dd.start("decoder-0", "--link-retry", "0", doc=doc)
    assert d.wait_exit() == 7, d.err
    assert "cluster 1 at 127.0.0.11" in d.err and "refused link pd_comm_other" in d.err
    assert "cluster 1 is in no link named 'pd_comm_other'" in d.err


def test_a_prompt_that_cannot_listen_on_its_ip_exits_7(dd: DataDistWorlds) -> None:
    doc = dd.doc(1)
    doc["options"]["llm.listenIpInfo"] = f"192.0.2.1:{DD_PORT}"  # TEST-NET: on no interface here
    p = dd.start("prompt-0", doc=doc)
    assert p.wait_exit() == 7, p.err
    assert f"cluster 1 cannot listen on 192.0.2.1:{DD_PORT} (llm.listenIpInfo)" in p.err


def test_a_probe_connection_is_no_link(dd: DataDistWorlds) -> None:
    p = dd.start("prompt-0")
    p.wait_ready()
    dd.start("prompt-1").wait_ready()
    with socket.create_connection(("127.0.0.11", DD_PORT), timeout=5):
        pass  # what the launcher's TCP readiness probe does
    dd.start("decoder-0", "--link-retry", "0").wait_ready()
    assert p.proc.poll() is None
    assert not any("refused" in ln for ln in p.lines), p.err


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(cluster_id="x"), "cluster_id 'x' is not an integer"),
    (lambda d: d.update(role="both"), "role 'both' is neither 'prompt' nor 'decoder'"),
    (lambda d: d["links"][0].pop("prompt_listen"), "links[0]: prompt_listen is missing"),
    (lambda d: d["links"][0].update(cluster_rank_info={"1": 0}), "does not name this cluster (3)"),
    (lambda d: d["links"][0].update(prompt_listen={"1": "nowhere"}), "expected 'ip:port', found 'nowhere'"),
])
def test_parse_datadist_rejects(edit: Callable[[dict[str, Any]], Any], message: str) -> None:
    from launcher.host.demo_rank import parse_datadist
    from launcher.core.pipeline import compile_text
    files = {f.path: f.content for hp in compile_text(DD_TOPOLOGY).plan.hosts for f in hp.files}
    doc = json.loads(files["llm_datadist/cluster_3.json"])
    edit(doc)
    with pytest.raises(EnvError, match=re.escape(message)):
        parse_datadist(doc, "F", "3")
