"""Which IP an Atlas A3 die carries in each table that names it: its vnic's or its RoCE NIC's.

A SuperPoD host's device `ip` is the die's vnic IP (hccn_tool -i N -vnic -g); `nic_ip` its RoCE NIC
IP (hccn_tool -i N -ip -g, /etc/hccn.conf address_N). Per use (docs/STACKS.md, "A3 device_ip"):
- an HCCL world (an instance's ranktable v1.2, a PD instance's local table and its entries in the PD
  global table) on hosts of more than one SuperPoD, or run with HCCL_INTER_HCCS_DISABLE=TRUE: the NIC
  IP. hicann/hccl rank_table_config_a3.md (@1bb23dd): device_ip is the die's real NIC IP (hccn.conf
  address_N), required when the network holds several SuperPoDs, and inside one when RDMA replaces
  HCCS (HCCL_INTER_HCCS_DISABLE=TRUE);
- an HCCL world inside one SuperPoD over HCCS: the vnic IP, as before (the guide makes the field
  optional there; which IP a CANN release checks then is not settled: unverified);
- an LLM-DataDist link inside one pod: the vnic IP (vllm-ascend gen_ranktable.py on A3); a link whose
  clusters are in two pods: its table spans SuperPoDs, so the NIC IP by the guide's rule.
Where a NIC IP is needed and not given, validation says so at the device. Pure.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from .model import DDLink, Device, Instance, Topology
from .placement import rank_placement
from .yamlsrc import Path, format_path

ROCE_ENV = "HCCL_INTER_HCCS_DISABLE"  # TRUE: HCCL uses RDMA between the dies of one pod too


def pods(topo: Topology, hnames: Iterable[str]) -> list[str]:
    """The SuperPoDs of these hosts, in order of first appearance (only SuperPoD hosts count)."""
    out: list[str] = []
    for n in hnames:
        h = topo.host(n)
        if h is not None and h.superpod and h.super_pod_id is not None and h.super_pod_id not in out:
            out.append(h.super_pod_id)
    return out


def _a3(topo: Topology, hnames: Iterable[str]) -> bool:
    hosts = [topo.host(n) for n in hnames]
    return bool(hosts) and all(h is not None and h.superpod for h in hosts)


def instance_roce(topo: Topology, inst: Instance) -> bool:
    """Whether the instance's HCCL world goes over RoCE: A3 hosts in several pods, or HCCS disabled."""
    if not _a3(topo, inst.hosts):
        return False
    return len(pods(topo, inst.hosts)) > 1 or dict(inst.env).get(ROCE_ENV, "").upper() == "TRUE"


def table_ip(device: Device, roce: bool) -> str | None:
    """The device_ip a table carries for this die."""
    return device.nic_ip if roce else device.ip


def link_hosts(topo: Topology, link: DDLink) -> list[str]:
    """The hosts of a link's cluster ranks (validate reports clusters that do not resolve)."""
    by_id = {c.id: c for c in topo.dd_clusters}
    out = []
    for cid in link.clusters:
        c = by_id.get(cid)
        inst = topo.instance(c.instance) if c else None
        placed = rank_placement(topo, inst) if inst is not None else []
        if c is not None and c.rank < len(placed):
            out.append(placed[c.rank][0])
    return out


def link_roce(topo: Topology, link: DDLink) -> bool:
    """Whether an LLM-DataDist link's table spans SuperPoDs."""
    hosts = link_hosts(topo, link)
    return _a3(topo, hosts) and len(pods(topo, hosts)) > 1


def check(topo: Topology) -> Iterator[tuple[Path, str]]:
    """(path, message) for each die a RoCE table needs the NIC IP of and does not have."""
    index = {h.name: k for k, h in enumerate(topo.hosts)}
    said: set[tuple[str, int]] = set()
    seen: dict[str, Path] = {}
    for k, h in enumerate(topo.hosts):
        for d in h.devices:
            path: Path = ("hosts", k, "devices", str(d.id))
            if d.nic_ip_discover and d.nic_ip is None:
                said.add((h.name, d.id))
                yield (path, f"host {h.name} device {d.id}: nic_ip is left to discovery and not in the lock file "
                       f"yet; run `launcher discover {topo.file}`")
            elif d.nic_ip is not None and d.nic_ip in seen:
                yield (path, f"host {h.name} device {d.id}: duplicate nic_ip {d.nic_ip} (also at "
                       f"{format_path(seen[d.nic_ip])}); HCCL wants every device_ip unique")
            elif d.nic_ip is not None:
                seen[d.nic_ip] = path
    worlds: list[tuple[str, list[tuple[str, int]]]] = []
    for inst in topo.instances:
        if instance_roce(topo, inst):
            why = (f"instance {inst.name} spans SuperPoDs {', '.join(pods(topo, inst.hosts))}"
                   if len(pods(topo, inst.hosts)) > 1 else f"instance {inst.name} sets {ROCE_ENV}=TRUE")
            worlds.append((why, [(h, d) for h, d in rank_placement(topo, inst)]))
    for link in topo.dd_links:
        if link_roce(topo, link):
            by_id = {c.id: c for c in topo.dd_clusters}
            members = []
            for cid in link.clusters:
                found = topo.instance(by_id[cid].instance)
                if found is not None:
                    members.append(rank_placement(topo, found)[by_id[cid].rank])
            worlds.append((f"LLM-DataDist link {link.name} spans SuperPoDs "
                           f"{', '.join(pods(topo, link_hosts(topo, link)))}", members))
    for why, members in worlds:
        for hname, dev in members:
            host = topo.host(hname)
            die = host.device(dev) if host is not None else None
            if die is None or die.nic_ip is not None or (hname, dev) in said:
                continue
            said.add((hname, dev))
            yield (("hosts", index[hname], "devices", str(dev)),
                   f"host {hname} device {dev}: {why}, so HCCL reaches it over RoCE: its table's device_ip "
                   f"must be the die's NIC IP (hccn_tool -i {dev} -ip -g; /etc/hccn.conf address_{dev}), not the "
                   "vnic IP in `ip`: add nic_ip: <IP> (or nic_ip: discover) to the device")
