"""`launcher discover`: read the device IPs marked `discover` from the hosts into the lock file.

The link checker reads each device's IP (DCMI where the driver library loads, else
`hccn_tool -i N -ip -g`) as part of its `ip` check; we ask it with a placeholder expected IP
and keep what it saw. Results go to the lock file beside the topology.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..core.errors import LauncherError
from ..core.expand import host_root
from ..core.lockfile import Facts
from ..core.model import Topology
from ..core.plan import HostPlan, Plan
from .files import read_lock, write_lock
from .remote import HostClient
from .session import Session

PLACEHOLDER = "0.0.0.0"
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def targets(topo: Topology) -> dict[str, list[int]]:
    """host -> device ids marked `discover`."""
    return {h.name: [d.id for d in h.devices if d.discover] for h in topo.hosts if any(d.discover for d in h.devices)}


def seen_ips(report: dict[str, Any]) -> tuple[dict[int, str], dict[int, str]]:
    """(device -> IP read, device -> why it could not be read) from a checker report."""
    found: dict[int, str] = {}
    errors: dict[int, str] = {}
    for c in report.get("checks", []):
        if c["check"] != "ip":
            continue
        seen = str(c.get("seen", ""))
        if _IPV4.match(seen) and seen != PLACEHOLDER:
            found[c["device"]] = seen
        else:
            errors[c["device"]] = f"{seen} ({c.get('evidence', '')})"
    return found, errors


def discover(topo: Topology, path: str, session_args: dict[str, Any]) -> tuple[Facts, bool, dict[str, str]]:
    """Read the IPs; (the lock file's facts, whether the file changed, device -> why unreadable)."""
    want = targets(topo)
    if not want:
        raise LauncherError(f"{path}: no device says `discover`; nothing to read")
    hosts = {h.name: h for h in topo.hosts}
    plan = Plan(topo.name, tuple(HostPlan(hosts[n], host_root(topo.name, hosts[n]), (), ()) for n in want), (),
                (), {})
    facts = {k: v for k, v in read_lock(path).items() if k[0] in want and k[1] in want[k[0]]}
    problems: dict[str, str] = {}
    with Session(plan, **session_args) as session:
        session.ensure_runtimes()

        def read(c: HostClient) -> tuple[dict[int, str], dict[int, str]]:
            spec = {"host": c.name, "devices": [{"id": d, "ip": PLACEHOLDER} for d in want[c.name]],
                    "peers": [], "pings": 1, "timeout": 10}
            reply = c.call("linkcheck", hosts[c.name].hccn_tool or "-", hosts[c.name].dcmi_lib or "-",
                           stdin=json.dumps(spec).encode())
            if reply.get("report") is None:
                raise LauncherError(reply.get("stderr") or "the link checker gave no report")
            return seen_ips(reply["report"])

        results = session.each("discover", read)
    for host, (found, errors) in results.items():
        for dev, ip in found.items():
            facts[(host, dev)] = ip
        for dev, why in errors.items():
            problems[f"{host} device {dev}"] = why
    changed = write_lock(path, facts) if not problems else False
    return facts, changed, problems
