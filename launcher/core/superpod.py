"""Atlas A3 SuperPoD checks: what HCCL's ranktable v1.2 parser refuses, caught at the topology's line:col.

HCCL's parser (CANN hcomm topoinfo_ranktableConcise.cc; ASCEND_REFERENCE §1.3): server_id at most
64 characters; in v1.2 every rank has a super_device_id, SDIDs are unique within a pod, and the
servers of one pod are listed together. A table is v1.0 or v1.2 as a whole, so an instance, a PD
group or an LLM-DataDist link mixing SuperPoD hosts with others is refused. Everything else the
parser checks (server_count, contiguous rank ids, one entry per server, unique device IPs) holds by
construction of the tables or is checked by validate for every table version.
"""
from __future__ import annotations

from typing import Iterable

from .errors import Diagnostic
from .model import Topology
from .yamlsrc import Path, format_path



class _A3:
    def __init__(self, topo: Topology) -> None:
        self.t = topo
        self.out: list[Diagnostic] = []
        self.hosts = {h.name: h for h in topo.hosts}

    def err(self, path: Path, message: str) -> None:
        loc = self.t.locs.value_loc(path) if self.t.locs is not None else None
        self.out.append(Diagnostic(loc, format_path(path), message))

    def declared(self, path: Path) -> bool:
        return self.t.locs is not None and _has(self.t.locs.data, path)

    def hosts_facts(self) -> None:
        sdids: dict[tuple[str, int], Path] = {}
        for i, h in enumerate(self.t.hosts):
            base: Path = ("hosts", i)
            if h.pod_discover and h.super_pod_id is None:
                self.err((*base, "super_pod_id"), f"host {h.name}: super_pod_id is left to discovery and not in "
                                                  f"the lock file yet; run `launcher discover {self.t.file}`")
            if h.chips_per_card is not None and not h.superpod:
                self.err((*base, "chips_per_card"), f"host {h.name}: chips_per_card is for SuperPoD (A3) hosts; "
                                                    "give the host its super_pod_id")
            for d in h.devices:
                path: Path = (*base, "devices", str(d.id))
                if not h.superpod:
                    if d.sdid is not None or d.sdid_discover:
                        self.err(path, f"host {h.name} device {d.id}: super_device_id without the host's "
                                       "super_pod_id; an A3 host needs both (ranktable v1.2)")
                    continue
                if d.sdid is None:
                    self.err(path, f"host {h.name} device {d.id}: super_device_id is left to discovery and not "
                                   f"in the lock file yet; run `launcher discover {self.t.file}`" if d.sdid_discover
                             else f"host {h.name} device {d.id}: a SuperPoD host's device needs its "
                                  "super_device_id ({ip: ..., super_device_id: N | discover}, or `discover`); "
                                  "without it HCCL falls back to AI server mode")
                    continue
                if h.super_pod_id is None:
                    continue
                key = (h.super_pod_id, d.sdid)
                if key in sdids:
                    self.err(path, f"host {h.name} device {d.id}: duplicate super_device_id {d.sdid} in "
                                   f"SuperPoD {h.super_pod_id} (also at {format_path(sdids[key])})")
                else:
                    sdids[key] = path

    def one_version(self, path: Path, what: str, hnames: Iterable[str]) -> bool:
        """True when the hosts make one table version; else an error naming both kinds."""
        names = [h for h in dict.fromkeys(hnames) if h in self.hosts]
        a3 = [h for h in names if self.hosts[h].superpod]
        if a3 and len(a3) != len(names):
            others = [h for h in names if not self.hosts[h].superpod]
            self.err(path, f"{what} mixes SuperPoD hosts ({', '.join(a3)}: ranktable v1.2) with hosts without "
                           f"super_pod_id ({', '.join(others)}: v1.0); one ranktable has one version")
            return False
        return bool(a3)

    def instances(self) -> None:
        for i, inst in enumerate(self.t.instances):
            base: Path = ("instances", i, "hosts")
            if not self.one_version(base, f"instance {inst.name}", inst.hosts):
                continue
            seen: list[str] = []
            for k, hname in enumerate(inst.hosts):
                pod = self.hosts[hname].super_pod_id if hname in self.hosts else None
                if pod is None:
                    continue
                if pod in seen and seen[-1] != pod:
                    self.err((*base, k), f"instance {inst.name}: host {hname} of SuperPoD {pod} comes after a "
                                         f"host of SuperPoD {seen[-1]}; HCCL wants the servers of one pod listed "
                                         "together (reorder hosts:)")
                seen.append(pod)

    def groups_and_links(self) -> None:
        for g_i, g in enumerate(self.t.pd_groups):
            members = [self.t.instance(n) for n in g.prefill + g.decode]
            self.one_version(("pd_groups", g_i), f"PD group {g.name}",
                             (h for m in members if m is not None for h in m.hosts))
        by_id = {c.id: c for c in self.t.dd_clusters}
        for i, link in enumerate(self.t.dd_links):
            hosts: list[str] = []
            for cid in link.clusters:
                c = by_id.get(cid)
                inst = self.t.instance(c.instance) if c else None
                if inst is not None:
                    hosts.extend(inst.hosts)  # every host of the instance: its ranks share one table version
            self.one_version(("llm_datadist", "links", i, "clusters"), f"link {link.name}", hosts)


def _has(data: object, path: Path) -> bool:
    node = data
    for part in path:
        try:
            node = node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def check(topo: Topology) -> list[Diagnostic]:
    """Every SuperPoD problem of a topology, unsorted (validate sorts)."""
    a3 = _A3(topo)
    a3.hosts_facts()
    a3.instances()
    a3.groups_and_links()
    return a3.out
