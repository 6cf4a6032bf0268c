"""`launcher discover`: read device IPs marked `discover`, and each host's interface, into the lock file.

The link checker reads each device's IP (DCMI where the driver library loads, else
`hccn_tool -i N -ip -g`) as part of its `ip` check; we ask it with a placeholder expected IP
and keep what it saw. On Atlas A3 hosts (super_pod_id) it runs in its A3 mode: the IP is the
vnic's (`hccn_tool -i N -vnic -g`) and its `spod` check reads the die's SDID and Super Pod ID
(`npu-smi info -t spod-info`). The interface (for GLOO/TP/HCCL_SOCKET_IFNAME) is read on every host
whose topology entry names none (`nic:` absent or `discover`) by the host side's `nic` action
(host/nic.py). Results go to the lock file beside the topology.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..core.errors import LauncherError
from ..core.expand import host_root
from ..core.load import SuperPodFacts
from ..core.lockfile import Facts
from ..core.model import Host, Topology
from ..core.preflight_a3 import DEFAULT_CHIPS_PER_CARD
from ..core.plan import HostPlan, Plan
from .files import read_lock, read_nics, read_superpod_facts, write_lock
from .remote import HostClient
from .session import Session

PLACEHOLDER = "0.0.0.0"
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_SPOD = re.compile(r"^SDID (\d+), Super Pod ID (\d+)$")  # the checker's `seen` of a spod check


def nic_ip_targets(topo: Topology) -> dict[str, list[int]]:
    """host -> A3 devices whose RoCE NIC IP is left to discovery (`nic_ip: discover`)."""
    out = {h.name: [d.id for d in h.devices if d.nic_ip_discover] for h in topo.hosts}
    return {h: ids for h, ids in out.items() if ids}


def targets(topo: Topology) -> dict[str, list[int]]:
    """host -> device ids marked `discover` (an IP, an SDID, or, for a pod id left to discovery, every device)."""
    out = {h.name: [d.id for d in h.devices if d.discover or d.sdid_discover or h.pod_discover] for h in topo.hosts}
    return {h: ids for h, ids in out.items() if ids}


def nic_targets(topo: Topology) -> list[str]:
    """Hosts whose interface is left to discovery: the topology (read without the lock file) names none."""
    return [h.name for h in topo.hosts if h.nic is None]


def seen_spods(report: dict[str, Any]) -> tuple[dict[int, tuple[int, str]], dict[int, str]]:
    """(device -> (SDID, Super Pod ID) read, device -> why not) from an A3 checker report."""
    found: dict[int, tuple[int, str]] = {}
    errors: dict[int, str] = {}
    for c in report.get("checks", []):
        if c["check"] != "spod":
            continue
        m = _SPOD.match(str(c.get("seen", "")))
        if m and c.get("state") in ("pass", "fail"):
            found[c["device"]] = (int(m.group(1)), m.group(2))
        else:
            errors[c["device"]] = f"SuperPoD facts: {c.get('seen', '')} ({c.get('evidence', '')})"
    return found, errors


def _spec(host: Host, devices: list[int]) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host.name, "devices": [{"id": d, "ip": PLACEHOLDER} for d in devices],
                            "peers": [], "pings": 1, "timeout": 10}
    if host.superpod:
        spec.update(superpod=True, chips_per_card=host.chips_per_card or DEFAULT_CHIPS_PER_CARD)
    return spec


def _linkcheck(c: HostClient, host: Host, spec: dict[str, Any]) -> dict[str, Any]:
    reply = c.call("linkcheck", host.hccn_tool or "-", host.dcmi_lib or "-", stdin=json.dumps(spec).encode())
    if reply.get("report") is None:
        raise LauncherError(reply.get("stderr") or "the link checker gave no report")
    report: dict[str, Any] = reply["report"]
    return report


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


def discover(topo: Topology, path: str, session_args: dict[str, Any]
             ) -> tuple[Facts, bool, dict[str, str], SuperPodFacts, dict[str, str]]:
    """Read the IPs (and A3 facts, and interfaces); (the lock file's IPs, whether the file changed,
    device or host -> why unreadable, its A3 facts, host -> interface). ``topo`` is read without the
    lock file."""
    want = targets(topo)
    nic_want = nic_targets(topo)
    roce_want = nic_ip_targets(topo)
    if not want and not nic_want and not roce_want:
        raise LauncherError(f"{path}: no device says `discover` and every host names its `nic:`; nothing to read")
    hosts = {h.name: h for h in topo.hosts}
    reach = [h.name for h in topo.hosts if h.name in want or h.name in nic_want or h.name in roce_want]
    plan = Plan(topo.name, tuple(HostPlan(hosts[n], host_root(topo.name, hosts[n]), (), ()) for n in reach), (),
                (), {})
    ip_want = {(h.name, d.id) for h in topo.hosts for d in h.devices if d.discover}
    sdid_want = {(h.name, d.id) for h in topo.hosts for d in h.devices if d.sdid_discover}
    pod_want = {h.name for h in topo.hosts if h.pod_discover}
    facts = {k: v for k, v in read_lock(path).items() if k in ip_want}
    old = read_superpod_facts(path)
    pods = {h: p for h, p in old.pods.items() if h in pod_want}
    sdids = {k: v for k, v in old.sdids.items() if k in sdid_want}
    nic_ips = {k: v for k, v in old.nic_ips.items() if k[0] in roce_want and k[1] in roce_want[k[0]]}
    nics = {h: n for h, n in read_nics(path).items() if h in nic_want}
    problems: dict[str, str] = {}
    with Session(plan, **session_args) as session:
        session.ensure_runtimes()

        def read(c: HostClient) -> dict[str, Any]:
            if c.name in nic_want:
                seen = c.call("nic", hosts[c.name].address)
                if seen.get("nic"):
                    nics[c.name] = seen["nic"]
                else:
                    problems[c.name] = (f"interface: none holds its address {hosts[c.name].address} "
                                        f"({', '.join(seen.get('addresses') or []) or 'it does not resolve there'}); "
                                        "name it with `nic:` on the host")
            report: dict[str, Any] = {}
            if c.name in roce_want:  # the dies' RoCE NIC IPs: the checker's A2 reading (-ip), not the vnic's
                nic_spec = {**_spec(hosts[c.name], roce_want[c.name]), "superpod": False}
                nic_spec.pop("chips_per_card", None)
                found, errors = seen_ips(_linkcheck(c, hosts[c.name], nic_spec))
                nic_ips.update(((c.name, d), ip) for d, ip in found.items())
                problems.update((f"{c.name} device {d}", f"the RoCE NIC's (hccn_tool -i {d} -ip -g): {why}")
                                for d, why in errors.items())
            if c.name in want:
                report = _linkcheck(c, hosts[c.name], _spec(hosts[c.name], want[c.name]))
            return report

        results = session.each("discover", read)
    for host, report in results.items():
        found, errors = seen_ips(report)
        spods, spod_errors = seen_spods(report)
        for dev, ip in found.items():
            if (host, dev) in ip_want:
                facts[(host, dev)] = ip
        for dev, why in errors.items():
            if (host, dev) in ip_want:
                problems[f"{host} device {dev}"] = why
        for dev, why in spod_errors.items():
            if (host, dev) in sdid_want or host in pod_want:
                problems[f"{host} device {dev}"] = why
        for dev, (sdid, _) in spods.items():
            if (host, dev) in sdid_want:
                sdids[(host, dev)] = sdid
        pod_ids = sorted({pod for _, pod in spods.values()})
        if host in pod_want and len(pod_ids) > 1:
            problems[f"{host}"] = f"its dies report different Super Pod IDs {pod_ids}"
        elif host in pod_want and pod_ids:
            pods[host] = pod_ids[0]
    a3 = SuperPodFacts(pods, sdids, nic_ips)
    changed = write_lock(path, facts, a3, nics) if not problems else False
    return facts, changed, problems, a3, nics
