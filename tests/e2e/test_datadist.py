"""End to end on the testbed: LLM-DataDist link order (seeds 000, 001).

h1 holds two prompt instances, h2 two decoder instances, every decoder linked to every prompt
(configs/llm-datadist-link.yaml's shape). The device IPs are extra addresses of the hosts'
namespaces, so each prompt demo rank really listens on its device IP and each decoder links
from its own. The decoders run with `--link-retry 0`: one attempt, so a link succeeds only
because `up` started the prompts and waited until they listened before starting the decoders.
"""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from tests.helpers import cli_on_testbed as cli, datadist_2p2d, run_cli, topology_head, host_entry, wait_for

TESTBED_HOSTS = 2
LISTEN_PORT = 26000
HEALTH = {"prompt-0": 18700, "prompt-1": 18701, "decoder-0": 18702, "decoder-1": 18703}
CLUSTER = {"prompt-0": 1, "prompt-1": 2, "decoder-0": 3, "decoder-1": 4}
PROMPTS, DECODERS = ("prompt-0", "prompt-1"), ("decoder-0", "decoder-1")
STAMP = re.compile(r"t=(\d+\.\d+)\)$")


@pytest.fixture(scope="module")
def device_ips(testbed) -> dict[str, list[str]]:
    """Two device IPs per host, added to its namespace (gone with the testbed)."""
    spare = testbed.spare_addresses()
    ips = {"h1": spare[0:2], "h2": spare[2:4]}
    for host, addrs in ips.items():
        for ip in addrs:
            testbed.add_address(host, ip)
    return ips


def topology(tb, ips: dict[str, list[str]], version: str = "1") -> str:
    h1, h2 = tb.hosts
    hosts = "".join(host_entry(tb, h, f"{{0: {ips[h.name][0]}, 1: {ips[h.name][1]}}}") for h in (h1, h2))

    def inst(name: str, host: str, dev: int, *extra: str) -> str:
        argv = ", ".join(["launcher-demo-rank", "--health-port", f'"{HEALTH[name]}"', *extra])
        env = f", env: {{V: '{version}'}}" if name == "prompt-0" else ""
        # a prompt is ready once it says it listens (the demo rank's log line)
        probe = ", probe: {log: 'datadist: listening on', period: 0.2}" if name in PROMPTS else ""
        return f"  - {{name: {name}, hosts: [{host}], devices: [{dev}], command: [{argv}]{env}{probe}}}\n"
    return f"""\
{topology_head("dd")}hosts:
{hosts}instances:
{inst("prompt-0", "h1", 0)}{inst("prompt-1", "h1", 1)}\
{inst("decoder-0", "h2", 0, "--link-retry", '"0"')}{inst("decoder-1", "h2", 1, "--link-retry", '"0"')}\
{datadist_2p2d(LISTEN_PORT)}"""



@pytest.fixture
def deployed(testbed, device_ips, tmp_path):
    path = tmp_path / "dd.yaml"
    path.write_text(topology(testbed, device_ips))
    yield str(path)
    cli(testbed, "down", str(path), "--purge")


def log_lines(tb, instance: str, marker: str) -> list[tuple[float, str]]:
    """(timestamp, line) of the instance's rank 0 log lines that contain `marker`, in order."""
    host = "h1" if instance in PROMPTS else "h2"
    log = tb.host(host).path(f"/srv/launcher/dd/{host}/logs/{instance}-r0.log")
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [(float(m.group(1)), ln) for ln in lines if marker in ln and (m := STAMP.search(ln))]


def listen_addr(ips: dict[str, list[str]], prompt: str) -> str:
    return f"{ips['h1'][PROMPTS.index(prompt)]}:{LISTEN_PORT}"


def link_times(tb, ips, decoder: str) -> dict[str, list[float]]:
    """prompt -> when this decoder linked to it (every incarnation), from its log."""
    out: dict[str, list[float]] = {}
    for prompt in PROMPTS:
        comm = f"pd_comm_{CLUSTER[prompt]}_{CLUSTER[decoder]}"
        out[prompt] = [t for t, _ in log_lines(tb, decoder, f"datadist: linked {comm} to {listen_addr(ips, prompt)}")]
    return out


def health(tb, instance: str) -> dict | None:
    host = tb.host("h1" if instance in PROMPTS else "h2")
    try:
        with urllib.request.urlopen(f"http://{host.address}:{HEALTH[instance]}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def all_running(tb, path: str) -> list[dict]:
    rows = json.loads(cli(tb, "status", path, "--json").out)
    return rows if rows and all(r["state"] == "RUNNING" for r in rows) else []


def test_prompts_listen_before_decoders_link_and_relink_after_a_prompt_restart(testbed, device_ips, deployed):
    plan = run_cli("plan", deployed)
    assert "start order: [prompt-0, prompt-1] -> [decoder-0, decoder-1]" in plan.out, plan.out + plan.err
    run = cli(testbed, "up", deployed)
    assert run.code == 0, run.err
    assert wait_for(lambda: all_running(testbed, deployed), 60, "every rank RUNNING")
    docs = {d: wait_for(lambda d=d: health(testbed, d), 30, f"{d} /health") for d in DECODERS}

    listened = {p: log_lines(testbed, p, "datadist: listening on") for p in PROMPTS}
    for p in PROMPTS:
        assert len(listened[p]) == 1 and listen_addr(device_ips, p) in listened[p][0][1], listened[p]
    for d in DECODERS:
        linked = link_times(testbed, device_ips, d)
        for p in PROMPTS:
            assert len(linked[p]) == 1, (d, p, linked)
            assert listened[p][0][0] < linked[p][0], f"{d} linked to {p} before it listened"
        assert [(lk["comm_name"], lk["peer"]) for lk in docs[d]["datadist"]["links"]] == [
            (f"pd_comm_{CLUSTER[p]}_{CLUSTER[d]}", listen_addr(device_ips, p)) for p in PROMPTS]

    # a restarted prompt: its decoders (both) link to it again, after it listens again
    restart = cli(testbed, "restart", deployed, "--instance", "prompt-0")
    assert restart.code == 0, restart.err
    assert "relinked decoder-0, decoder-1" in restart.err, restart.err
    again = log_lines(testbed, "prompt-0", "datadist: listening on")
    assert len(again) == 2
    for d in DECODERS:
        new = wait_for(lambda d=d: health(testbed, d) if (health(testbed, d) or {}).get("pid") != docs[d]["pid"]
                       else None, 30, f"{d} restarted")
        linked = link_times(testbed, device_ips, d)
        assert len(linked["prompt-0"]) == 2 and again[1][0] < linked["prompt-0"][1], (d, linked, again)
        assert len(new["datadist"]["links"]) == 2
    assert wait_for(lambda: all_running(testbed, deployed), 60, "every rank RUNNING after the restart")

    # `up` with a change to prompt-0 only: it restarts, and so do the decoders linked to it
    with open(deployed, "w") as fh:
        fh.write(topology(testbed, device_ips, version="2"))
    changed = cli(testbed, "up", deployed, "--json")
    assert changed.code == 0, changed.err
    assert sorted(json.loads(changed.out)["started"]) == ["decoder-0", "decoder-1", "prompt-0"]
    third = log_lines(testbed, "prompt-0", "datadist: listening on")
    assert len(third) == 3
    for d in DECODERS:
        linked = wait_for(lambda d=d: (lk := link_times(testbed, device_ips, d)) and len(lk["prompt-0"]) == 3 and lk,
                          30, f"{d} linked a third time")
        assert third[2][0] < linked["prompt-0"][2]
    assert wait_for(lambda: all_running(testbed, deployed), 60, "every rank RUNNING after the change")

    # a rolling restart of prompt-1 alone: its decoders join the roll, each after it listens
    roll = cli(testbed, "restart", deployed, "--rolling", "--instance", "prompt-1", "--json")
    assert roll.code == 0, roll.err
    assert json.loads(roll.out)["restarted"] == ["prompt-1", "decoder-0", "decoder-1"]
    fourth = log_lines(testbed, "prompt-1", "datadist: listening on")
    assert len(fourth) == 2  # the first up, then the roll (nothing else restarted prompt-1)
    for d in DECODERS:
        linked = link_times(testbed, device_ips, d)
        assert fourth[-1][0] < linked["prompt-1"][-1], (d, linked, fourth)
