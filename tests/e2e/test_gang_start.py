"""A cold `up` starts a multi-host instance once every host is ready, all at once, through its
leader's agent (launcher/host/gangstart.py); a single-host instance still starts in its upload.

2 hosts: instance `demo` spans h1 (its leader) and h2 on NPU 0, `solo` runs on h2 alone. Hosts
are checked from outside too: the testbed shares the pid namespace, so what runs of a host's
deployment is found by its root in a process's command line or environment.
"""
from __future__ import annotations

import json

from tests.helpers import health_json as health
from tests.helpers import cli_on_testbed as cli, host_entry, live_pids, run_cli, ssh_flags, topology_head, wait_for
from tests.testbed.core import Testbed

TESTBED_HOSTS = 2
HEALTH = 18910
AGENT_PORT = 29390
NAME = "gstart"


def topology(tb: Testbed) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.97.{i}.1, 1: 10.97.{i}.2}}") for i, h in enumerate(tb.hosts))
    h1, h2 = (h.name for h in tb.hosts)
    return (topology_head(NAME) + f"hosts:\n{hosts}instances:\n"
            f"  - name: demo\n    hosts: [{h1}, {h2}]\n    devices: [0]\n"
            f"    command: [launcher-demo-rank, --health-port, \"{HEALTH}\", --barrier-timeout, \"60\"]\n"
            f"  - name: solo\n    hosts: [{h2}]\n    devices: [1]\n"
            f"    command: [launcher-demo-rank, --health-port, \"{HEALTH + 100}\"]\n")


def root(host) -> str:
    return f"/srv/launcher/{NAME}/{host.name}"


def deployment_pids(host) -> list[int]:
    """Live processes of this host's deployment: supervisord and the agent name its root on
    their command line, the programs carry its supervisord's socket in their environment."""
    marker = root(host).encode()
    return live_pids(lambda cmd, env: marker + b"/" in cmd or marker + b"/run/supervisor.sock" in env)


def started(pid: int) -> int:
    """A process's start time (clock ticks since boot; one pid namespace on the testbed)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        return int(fh.read().rsplit(b")", 1)[1].split()[19])


def listeners(tb: Testbed, host, port: int) -> str:
    return tb.run(host, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip()


def agent_log(tb: Testbed, host) -> str:
    return tb.run(host, ["cat", f"{root(host)}/logs/launcher-agent.log"]).stdout


def test_a_cold_up_starts_a_multi_host_gang_through_its_leaders_agent(testbed, tmp_path):
    h1, h2 = testbed.hosts
    path = tmp_path / "topo.yaml"
    path.write_text(topology(testbed))
    try:
        run = cli(testbed, "up", str(path), "--json")
        assert run.code == 0, run.err
        report = json.loads(run.out)
        assert sorted(report["started"]) == ["demo", "solo"]
        docs = wait_for(lambda: d if all((d := {h.name: health(h.address, HEALTH) for h in testbed.hosts}).values())
                        else None, what="both demo ranks past their barrier")
        assert sorted(d["rank"] for d in docs.values()) == [0, 1]
        # the leader started its own rank (rank 0, whom its peers connect to) before asking the member
        assert docs[h1.name]["rank"] == 0 and started(docs[h1.name]["pid"]) <= started(docs[h2.name]["pid"])
        assert wait_for(lambda: health(h2.address, HEALTH + 100), what="solo ready")["world_size"] == 1
        # the leader's agent started demo on both hosts; solo (one host) started in h2's upload
        assert "gang demo: started on 2 hosts at once, as `up` asked" in agent_log(testbed, h1)
        assert "gang solo" not in agent_log(testbed, h2)
        rows = json.loads(cli(testbed, "status", str(path), "--json").out)
        assert {(r["instance"], r["host"], r["state"], r["restarts"]) for r in rows} == {
            ("demo", h1.name, "RUNNING", 0), ("demo", h2.name, "RUNNING", 0), ("solo", h2.name, "RUNNING", 0)}
    finally:
        run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def test_a_member_the_leaders_agent_cannot_reach_fails_the_cold_up_and_leaves_both_hosts_blank(testbed, tmp_path):
    h1, h2 = testbed.hosts
    path = tmp_path / "topo.yaml"
    path.write_text(topology(testbed))
    # h1 (demo's leader) cannot reach h2's agent port; SSH and everything else still work
    block = ["ip", "rule", "add", "priority", "100", "to", h2.address, "ipproto", "tcp", "dport", str(AGENT_PORT),
             "prohibit"]
    testbed.run(h1, block, check=True)
    try:
        run = cli(testbed, "up", str(path))
        assert run.code == 1, run.err
        assert f"member {h2.name} ({h2.address}): cannot reach its agent on port {AGENT_PORT}" in run.err, run.err
        assert "put back to nothing" in run.err, run.err
        assert "Traceback" not in run.err
        for h in (h1, h2):  # nothing of the failed up runs on either host: no supervisord, agent or rank
            wait_for(lambda: not deployment_pids(h), timeout=30, what=f"nothing of {NAME} left on {h.name}")
            assert not listeners(testbed, h, HEALTH) and not listeners(testbed, h, AGENT_PORT)
    finally:
        testbed.run(h1, ["ip", "rule", "del", "priority", "100"], check=True)
    try:
        run = cli(testbed, "up", str(path))  # the path is open again: the same up now succeeds
        assert run.code == 0, run.err
        wait_for(lambda: all(health(h.address, HEALTH) for h in testbed.hosts), what="demo past its barrier")
        assert "gang demo: started on 2 hosts at once" in agent_log(testbed, h1)
    finally:
        run_cli("down", str(path), "--purge", *ssh_flags(testbed))


def test_a_cold_up_that_cannot_reach_a_host_leaves_the_lock_host_blank(testbed, tmp_path):
    """The lock host (h1) is blank, so `up` uploads everywhere at once without reading states; h2's
    sshd is gone: the up fails naming h2, and h1, switched by its upload, is put back to nothing
    (ps: no supervisord, agent or rank of it). With sshd back, the same up succeeds."""
    h1, h2 = testbed.hosts
    path = tmp_path / "topo.yaml"
    path.write_text(topology(testbed))
    testbed.kill_sshd(h2)
    try:
        run = cli(testbed, "up", str(path))
        assert run.code == 1, run.err
        assert "(the lock host) has nothing of gstart" in run.err, run.err
        assert f"  {h2.name}: ssh to {h2.address}" in run.err and "Traceback" not in run.err, run.err
        assert "the blank hosts it had switched were put back to nothing" in run.err, run.err
        assert "NOT put back" not in run.err, run.err  # h2 was never reached: nothing ran there
        for h in (h1, h2):
            wait_for(lambda: not deployment_pids(h), timeout=30, what=f"nothing of {NAME} left on {h.name}")
        assert not listeners(testbed, h1, HEALTH) and not listeners(testbed, h1, AGENT_PORT)
    finally:
        testbed.restart_sshd(h2)
    assert not listeners(testbed, h2, HEALTH) and not listeners(testbed, h2, AGENT_PORT)
    try:
        run = cli(testbed, "up", str(path))
        assert run.code == 0, run.err
        wait_for(lambda: all(health(h.address, HEALTH) for h in testbed.hosts), what="demo past its barrier")
    finally:
        run_cli("down", str(path), "--purge", *ssh_flags(testbed))
