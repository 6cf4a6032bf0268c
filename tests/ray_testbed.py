"""A real Ray cluster (Ray from PyPI, the `test` extra) on the testbed, shared by the Ray e2e tests.

The topology runs `ray start --head --block` on h1 and a worker node on h2 as two `generic`
services, as configs/vllm-ascend-ray-2node.yaml does. The head runs in a PID namespace of its own
(`unshare --pid --fork --mount-proc`), for two reasons:
- `ray start --head` refuses to start while it sees a raylet naming its GCS address
  (ray/_private/services.py, find_gcs_addresses). The testbed's hosts share one PID namespace, so it
  would see the worker's raylet on h2, which no real head host can see.
- Since Ray 2.5x, kill -9 of `ray start` itself takes its GCS server and raylet with it (they die
  with their parent). kill -9 of the wrapper around it (unshare here; `bash -c`, a container runtime
  in real use) leaves the whole tree running, the case of the issue: the GCS holds the port.

Ray runs from this venv, which lives under /root (0700): the topology logs in as root.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import cli_on_testbed as cli

RAY = Path(sys.executable).parent / "ray"
PORT = 6390
needs_ray = pytest.mark.skipif(not RAY.exists(), reason=f"ray is not installed in this venv ({RAY}): pip install -e .[test]")


def ray_on_hosts(tb) -> list[str]:
    """How the testbed hosts run this venv's `ray`; skips when they cannot see it (a checkout under
    /tmp, /srv or a home: the hosts have private ones)."""
    if tb.run(tb.hosts[0].name, ["test", "-x", str(RAY)]).returncode != 0:
        pytest.skip(f"the testbed hosts cannot see this venv's ray ({RAY}): the checkout is under a "
                    "directory the hosts have a private copy of (/tmp, /srv, a home); run from another one")
    return [str(RAY)]


def ray_header(tb, name: str) -> str:
    """A Ray topology's start, to its hosts (root logs in: Ray runs from this venv, under /root)."""
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n"
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n    devices: {{0: 10.99.{i}.1}}\n"
                    for i, h in enumerate(tb.hosts))
    return (f"version: 1\nname: {name}\ndefaults:\n  deploy_dir: /srv/launcher\n"
            f"  restart: {{max: 3, window: 600}}\n  preflight: false\nhosts:\n{hosts}")


def topology(tb, ray: list[str], resources: str | None = None, instances: str = "") -> str:
    """Head on h1, worker on h2; each node offers ``resources`` (Ray's --resources JSON) when given;
    ``instances``: the topology's `instances:` section, if any."""
    h1, h2 = tb.hosts
    cmd = ", ".join(f'"{a}"' for a in ray)
    # small: one CPU, no dashboard, the least object store Ray takes, its files in the host's own /tmp;
    # a worker that lost its head gives up after 10 s (60 by default) and is restarted to rejoin
    small = ('"--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", "78643200", '
             '"--temp-dir", "/tmp/ray"')
    if resources:
        small += ", --resources, " + json.dumps(resources)
    env = '{RAY_gcs_rpc_server_reconnect_timeout_s: "10"}'
    own_pids = '"unshare", "--pid", "--fork", "--mount-proc", '  # see the module's docstring
    return f"""\
{ray_header(tb, f"ray{tb.id}")}services:
  - name: ray-head
    kind: generic
    hosts: [{h1.name}]
    env: {env}
    command: [{own_pids}{cmd}, start, --head, --port, "{PORT}", --node-ip-address, "{h1.address}", --block,
              --include-dashboard=false, {small}]
    probe: {{tcp: "{h1.address}:{PORT}", timeout: 5}}
  - name: ray-worker
    kind: generic
    hosts: [{h2.name}]
    env: {env}
    depends_on: [ray-head]
    command: [{cmd}, start, --address, "{h1.address}:{PORT}", --node-ip-address, "{h2.address}", --block, {small}]
    probe: {{log: "Ray runtime started", timeout: 120}}
{instances}"""


def marked(root: str, comm: str | None = None) -> list[int]:
    """Live processes carrying the marker of ROOT's supervisord (the deployment's on one host:
    ROOT names the host), with command name ``comm`` when given."""
    marker = f"SUPERVISOR_SERVER_URL=unix://{root}/run/supervisor.sock".encode()
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{d}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        name, state = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(), stat.rsplit(b")", 1)[1].split()[0]
        if marker in env and state not in (b"Z", b"X") and (comm is None or name == comm):
            out.append(int(d))
    return sorted(out)


def tree(pid: int) -> list[int]:
    """PID and every live descendant of it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(b")", 1)[1].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def ray_text(tb, *argv: str) -> str | None:
    """`ray ARGV --address HEAD` run on h1 (as the head's own host sees the cluster); None if it fails."""
    proc = tb.run(tb.hosts[0].name, [*ray_on_hosts(tb), *argv, "--address", f"{tb.hosts[0].address}:{PORT}"])
    if proc.returncode != 0:
        return None
    return proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()


def active_nodes(tb) -> int:
    """Nodes `ray status` counts as active."""
    text = ray_text(tb, "status") or ""
    active = text.split("Active:", 1)[1].split("Pending:", 1)[0] if "Active:" in text else ""
    return len(re.findall(r"^\s*1 node_", active, re.M))


def listening(tb, port: int) -> int:
    """Sockets listening on PORT on h1 (`ss -ltn` there)."""
    proc = tb.run(tb.hosts[0].name, ["ss", "-Hltn", f"sport = :{port}"])
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode()
    return len([ln for ln in out.splitlines() if ln.strip()])


def rows(tb, path: str) -> dict[str, dict]:
    """`launcher status --json`, by instance or service."""
    return {r.get("instance") or r.get("service") or r["program"]: r
            for r in json.loads(cli(tb, "status", path, "--json").out)}


def agent_log(tb, host, root: str) -> str:
    """The agent's log on HOST (a testbed host) of the deployment at ROOT."""
    out = tb.run(host.name, ["cat", f"{root}/logs/launcher-agent.log"]).stdout
    return out if isinstance(out, str) else out.decode()
