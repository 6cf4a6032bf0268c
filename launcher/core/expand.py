"""Validated Topology -> Plan. Pure and deterministic: same topology, byte-identical plan.

The caller validates first (pipeline.compile_source): expansion looks every reference up
and treats one that does not resolve as a bug, not as bad input. Ranks are numbered from 0 in the instance's host order, then ascending device id, and
continue across hosts (seed 004: the second server holds ranks 4..7).
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any, Iterable, TypeVar

from .gcpause import paused
from . import a3_ips, containers, framework_env, jsonfmt, stack_versions
from .service_argv import dscli_argv, etcd_argv, etcd_probe
from .graph import dependency_edges, start_levels
from .model import (DEFAULT_RENDEZVOUS_PORT, DatasystemSpec, EtcdSpec, Env, GenericSpec, Host,
                    Instance, Limits, Probe, Service, Topology)
from .placeholders import fill
from .placement import rank_placement, service_ports
from .probes import probe_on
from .plan import File, FrozenMap, HostPlan, InstancePlan, JsonDoc, LinkMember, Plan, Program, RankInfo
from .ranktable import RankSlot, hccl_v1, pd_global, pd_host_entry, pd_local
from .ranktable_v12 import hccl_v12, host_ip, pd_global_v12, pd_local_v12

to_json_bytes = jsonfmt.dumps_bytes
# Ranktables and the framework configs made from them: MindIE refuses a rank table or config.json
# with more than 0640 (owner = the daemon's uid), ATB's safe_open one writable by others.
CONFIG_MODE = 0o640
S = TypeVar("S", EtcdSpec, DatasystemSpec, GenericSpec)


class _Expander:
    @paused  # placement allocates per rank too (see gcpause)
    def __init__(self, topo: Topology):
        self.t = topo
        self.hosts = {h.name: h for h in topo.hosts}
        self.files: dict[str, dict[str, File]] = defaultdict(dict)  # host -> path -> File
        self.programs: dict[str, list[Program]] = defaultdict(list)
        self.rdzv = self._assign_rendezvous_ports()
        self.placement = {i.name: self._placement(i) for i in topo.instances}
        self.ranktable_path: dict[str, str] = {}   # instance -> path relative to the generation
        self.ranktable: dict[str, JsonDoc] = {}
        self.global_path: dict[str, str] = {}      # instance -> PD global ranktable path
        self.pd_globals: dict[str, JsonDoc] = {}
        self.datadist_file: dict[tuple[str, int], tuple[str, int]] = {}  # (instance, rank) -> (path, cluster)
        self.links: list[tuple[str, tuple[LinkMember, ...]]] = []
        self._a3: dict[str, tuple[str | None, dict[int, int | None]]] = {}

    # --- placement and ports -------------------------------------------------------------
    def _placement(self, inst: Instance) -> list[RankInfo]:
        out: list[RankInfo] = []
        local: dict[str, int] = defaultdict(int)
        roce = a3_ips.instance_roce(self.t, inst)  # an A3 world across pods: the dies' NIC IPs
        for hname, dev in rank_placement(self.t, inst):
            device = self.hosts[hname].device(dev)
            ip = a3_ips.table_ip(device, roce) if device else None
            out.append(RankInfo(len(out), hname, local[hname], dev, ip or ""))
            local[hname] += 1
        return out

    def _assign_rendezvous_ports(self) -> dict[str, int]:
        """Explicit ports as given; the others get the first free port from 29500 on their master host."""
        taken: dict[str, set[int]] = defaultdict(set)
        for inst in self.t.instances:
            if inst.rendezvous_port is not None:
                taken[self.hosts[inst.hosts[0]].address].add(inst.rendezvous_port)
        for svc in self.t.services:
            for hname in svc.hosts:
                taken[self.hosts[hname].address].update(p.port for p in service_ports(svc.spec))
        out: dict[str, int] = {}
        for inst in self.t.instances:
            addr = self.hosts[inst.hosts[0]].address
            port = inst.rendezvous_port
            if port is None:
                port = DEFAULT_RENDEZVOUS_PORT
                while port in taken[addr]:
                    port += 1
                taken[addr].add(port)
            out[inst.name] = port
        return out

    # --- references: expansion runs on a validated topology, where every one resolves ------
    def instance(self, name: str) -> Instance:
        inst = self.t.instance(name)
        if inst is None:
            raise ValueError(f"no instance {name!r}: expand a validated topology")
        return inst

    def service(self, name: str, kind: type[S]) -> tuple[Service, S]:
        svc = self.t.service(name)
        if svc is None or not isinstance(svc.spec, kind):
            raise ValueError(f"no {kind.__name__} service {name!r}: expand a validated topology")
        return svc, svc.spec

    def root(self, host: Host) -> str:
        return host_root(self.t.name, host)

    def abs_path(self, hname: str, rel: str) -> str:
        return f"{self.root(self.hosts[hname])}/current/{rel}"

    def put(self, hnames: Iterable[str], rel: str, doc: Any) -> JsonDoc:
        """The same document on several hosts: serialized once; returns it as the plan keeps it."""
        f = File(rel, to_json_bytes(doc), CONFIG_MODE)
        for hname in hnames:
            self.files[hname][rel] = f
        return JsonDoc(f.content)

    def slots(self, ranks: list[RankInfo], base: int = 0, inst: Instance | None = None) -> list[RankSlot]:
        """``inst``: its container_ip per server (framework_env.container_ip), else the host's."""
        out = []
        last = None  # what a rank takes from its host, looked up when the host changes (ranks come by host)
        for r in ranks:
            if r.host != last:
                last, h = r.host, self.hosts[r.host]
                host_ip, sdids = self.a3_facts(h) if h.superpod else (None, None)
                cip = h.container_ip if inst is None else framework_env.container_ip(inst, h)
            out.append(RankSlot(h.server_id, r.device_id, r.device_ip, r.rank - base, cip,
                                h.container_ip or h.server_id, None if sdids is None else sdids.get(r.device_id),
                                h.super_pod_id, host_ip))
        return out

    def a3_facts(self, h: Host) -> tuple[str | None, dict[int, int | None]]:
        """(host_ip, device id -> SDID) of a SuperPoD host, once per host (16k ranks look them up)."""
        facts = self._a3.get(h.name)
        if facts is None:
            facts = self._a3[h.name] = (host_ip(h.address), {d.id: d.sdid for d in h.devices})
        return facts

    def a3(self, hnames: Iterable[str]) -> bool:
        """SuperPoD hosts get ranktable v1.2 (validate refuses a table mixing them with others)."""
        return all(self.hosts[h].superpod for h in hnames)

    # --- ranktables ----------------------------------------------------------------------
    def standalone_tables(self) -> None:
        for inst in self.t.instances:
            if inst.role != "standalone":
                continue
            rel = f"ranktables/{inst.name}.json"
            slots = self.slots(self.placement[inst.name], inst=inst)
            table = hccl_v12(slots) if self.a3(inst.hosts) else hccl_v1(slots)
            self.ranktable_path[inst.name] = rel
            self.ranktable[inst.name] = self.put(inst.hosts, rel, table)

    def pd_tables(self) -> None:
        for g in self.t.pd_groups:
            sched = self.hosts[g.schedulers[0]]
            sched_entry = {"server_id": sched.server_id, "server_ip": sched.container_ip or sched.server_id}
            members = [self.instance(n) for n in g.prefill + g.decode]
            a3 = self.a3(h for m in members for h in m.hosts)
            table = (pd_global_v12 if a3 else pd_global)(
                sched_entry, [self.slots(self.placement[n]) for n in g.prefill],
                [self.slots(self.placement[n]) for n in g.decode])
            group_hosts = list(dict.fromkeys([sched.name] + [h for m in members for h in m.hosts]))
            single = len(group_hosts) == 1
            global_rel = f"ranktables/global_ranktable_{sched.address if single else 'merge'}.json"
            self.pd_globals[g.name] = self.put(group_hosts, global_rel, table)
            self.put([sched.name], f"ranktables/local_ranktable_{sched.address}_host.json",
                     pd_host_entry(sched_entry))
            for inst in members:
                ranks = self.placement[inst.name]
                first = self.hosts[inst.hosts[0]]
                devids = "".join(str(r.device_id) for r in ranks if r.host == first.name)
                rel = f"ranktables/local_ranktable_{first.address}_{devids}.json"
                table_local = (pd_local_v12 if a3 else pd_local)(self.slots(ranks))
                self.ranktable_path[inst.name] = rel
                self.global_path[inst.name] = global_rel
                self.ranktable[inst.name] = self.put(inst.hosts, rel, table_local)

    # --- LLM-DataDist --------------------------------------------------------------------
    def datadist(self) -> None:
        by_id = {c.id: c for c in self.t.dd_clusters}
        links: dict[int, list[dict[str, Any]]] = defaultdict(list)
        nic_side: dict[int, RankInfo] = {}  # a cluster in a link across pods: its rank with the die's NIC IP
        for link in self.t.dd_links:
            members = [by_id[c] for c in link.clusters]
            ranks = [self.placement[c.instance][c.rank] for c in members]
            if a3_ips.link_roce(self.t, link):  # its table spans SuperPoDs: the dies' NIC IPs (a3_ips.py)
                ranks = [dataclasses.replace(r, device_ip=self.hosts[r.host].device(r.device_id).nic_ip or "")  # type: ignore[union-attr]
                         for r in ranks]
                nic_side.update((c.id, r) for c, r in zip(members, ranks))
            self.links.append((link.name, tuple(
                LinkMember(c.id, c.role, c.instance, r.host, r.device_id, r.device_ip,
                           f"{c.listen_ip or r.device_ip}:{c.listen_port}" if c.role == "prompt" else None)
                for c, r in zip(members, ranks))))
            a3 = self.a3(r.host for r in ranks)
            slots = _group_by_server([s for r in ranks for s in self.slots([r], r.rank)], a3)
            # vllm-ascend's connector wrote exactly this per pair: v1.2 with super_pod_list on 910_93
            table = json.dumps(hccl_v12(slots) if a3 else hccl_v1(slots), ensure_ascii=False)
            order = {s.device_ip: s.rank_id for s in slots}
            info = {str(c.id): order[r.device_ip] for c, r in zip(members, ranks)}
            # where the decoder side links to (LinkLlmClusters' remote_ip_infos), by prompt cluster id
            listen = {str(c.id): f"{c.listen_ip or r.device_ip}:{c.listen_port}"
                      for c, r in zip(members, ranks) if c.role == "prompt"}
            for c in members:
                links[c.id].append({"comm_name": link.name, "cluster_rank_info": info, "rank_table": table,
                                    "prompt_listen": listen})
        for c in self.t.dd_clusters:
            r = nic_side.get(c.id) or self.placement[c.instance][c.rank]
            options = {"ge.exec.deviceId": str(r.device_id), "llm.EnableCacheManager": "1"}
            if c.role == "prompt":
                options["llm.listenIpInfo"] = f"{c.listen_ip or r.device_ip}:{c.listen_port}"
            doc = {"cluster_id": str(c.id), "role": c.role, "instance": c.instance, "rank": str(c.rank),
                   "host": r.host, "options": options, "links": links.get(c.id, [])}
            rel = f"llm_datadist/cluster_{c.id}.json"
            self.put([r.host], rel, doc)
            self.datadist_file[(c.instance, c.rank)] = (rel, c.id)

    # --- programs ------------------------------------------------------------------------
    def ds_worker_addr(self, ds_name: str, hname: str) -> str:
        _, spec = self.service(ds_name, DatasystemSpec)
        return f"{self.hosts[hname].address}:{spec.port}"

    def instance_programs(self, inst: Instance) -> None:
        ranks = self.placement[inst.name]
        world = len(ranks)
        master = self.hosts[inst.hosts[0]].address
        by_host: dict[str, list[RankInfo]] = defaultdict(list)  # once: not a walk of the world per host
        for r in ranks:
            by_host[r.host].append(r)
        addresses = ",".join(self.hosts[h].address for h in inst.hosts)  # the same for each host
        for index, hname in enumerate(inst.hosts):
            on_host = by_host[hname]
            table = self.abs_path(hname, self.ranktable_path[inst.name])
            values = {**self.host_values(hname, index), "host.devices": ",".join(str(r.device_id) for r in on_host),
                      "instance.name": inst.name, "instance.hosts": addresses,
                      "instance.host_count": len(inst.hosts), "master_addr": master,
                      "rendezvous_port": self.rdzv[inst.name], "world_size": world,
                      "local_world_size": len(on_host), "rank_id_start": on_host[0].rank, "ranktable": table}
            argv = tuple(fill(a, values) for a in inst.command + (inst.leader_args if index == 0 else inst.worker_args))
            common: dict[str, str] = {"BACKEND": "hccl",
                                      "ASCEND_RT_VISIBLE_DEVICES": containers.visible_ids(  # as numbered there
                                          inst, self.hosts[hname], [r.device_id for r in on_host])}
            if inst.datasystem:
                common.update(self.datasystem_env(inst, hname))
            common.update(framework_env.defaults(inst, self.hosts[hname]))
            common.update((k, fill(v, values)) for k, v in inst.env)
            ident = {"WORLD_SIZE": str(world), "RANK_SIZE": str(world), "LOCAL_WORLD_SIZE": str(len(on_host)),
                     "RANK_ID_START": str(on_host[0].rank),
                     **framework_env.table_env(inst, table),
                     "MASTER_ADDR": master, "MASTER_PORT": str(self.rdzv[inst.name])}
            if inst.name in self.global_path:
                ident["GLOBAL_RANK_TABLE_FILE_PATH"] = self.abs_path(hname, self.global_path[inst.name])
            ident.update(self.framework_files(inst, hname))
            tags = {"LAUNCHER_DEPLOYMENT": self.t.name, "LAUNCHER_INSTANCE": inst.name,
                    "LAUNCHER_ROLE": inst.role, "LAUNCHER_HOST": hname,
                    "LAUNCHER_HOST_ADDRESS": self.hosts[hname].address,
                    "LAUNCHER_SERVER_ID": self.hosts[hname].server_id}
            head = {**common, **ident}  # what every rank of the host has before its own
            apart = RANK_NAMES.isdisjoint(head) and RANK_NAMES.isdisjoint(tags) and head.keys().isdisjoint(tags)
            head_pairs, tag_pairs = tuple(head.items()), tuple(tags.items())
            probe = probe_on(inst.probe, hname == inst.hosts[0])  # once per host, not per rank
            if inst.processes == "per_host":
                self.programs[hname].append(_program(
                    f"{inst.name}-h{index}", hname, inst, argv, _env(head_pairs, (), tag_pairs, apart), probe, None,
                    tuple(r.device_id for r in on_host)))
                continue
            programs = self.programs[hname]
            for r in on_host:
                rank = str(r.rank)
                own: Env = (("RANK", rank), ("LOCAL_RANK", str(r.local_rank)), ("RANK_ID", rank),
                            ("DEVICE_ID", str(r.device_id)), ("LAUNCHER_DEVICE_IP", r.device_ip))
                dd = self.datadist_file.get((inst.name, r.rank)) if self.datadist_file else None
                if dd:
                    own += (("LAUNCHER_DATADIST_FILE", self.abs_path(hname, dd[0])),
                            ("LAUNCHER_DATADIST_CLUSTER_ID", str(dd[1])))
                programs.append(_program(f"{inst.name}-r{rank}", hname, inst, argv,
                                         _env(head_pairs, own, tag_pairs, apart), probe, r, (r.device_id,)))

    def datasystem_env(self, inst: Instance, hname: str) -> dict[str, str]:
        """How the ranks reach this host's datasystem worker (stack_versions.yuanrong_client)."""
        assert inst.datasystem is not None
        _, ds = self.service(inst.datasystem, DatasystemSpec)
        addr, rh2d = self.ds_worker_addr(inst.datasystem, hname), bool(ds.remote_h2d_devices)
        if stack_versions.yuanrong_client(inst) == "yr_config":  # vllm-ascend main: YuanrongConfig.from_file
            rel = f"yuanrong/{inst.name}.json"
            self.files[hname][rel] = File(rel, to_json_bytes({"worker_addr": addr, "enable_remote_h2d": rh2d}))
            return {"YR_CONFIG_PATH": self.abs_path(hname, rel), "PYTHONHASHSEED": "0"}
        return {"DS_WORKER_ADDR": addr, "DS_ENABLE_REMOTE_H2D": "1" if rh2d else "0",
                "DS_ENABLE_EXCLUSIVE_CONNECTION": "0", "PYTHONHASHSEED": "0"}

    def framework_files(self, inst: Instance, hname: str) -> dict[str, str]:
        """The framework's own files on this host (MindIE's config.json) and the env naming them."""
        rel = framework_env.config_path(inst)
        if rel is not None and inst.mindie is not None:
            base = self.t.inputs[inst.mindie.config]
            endpoint = framework_env.endpoint_ip(inst, self.hosts[hname])
            self.files[hname][rel] = File(rel, framework_env.mindie_config(inst, base, endpoint), CONFIG_MODE)
        return framework_env.identity(inst, self.hosts[hname], [self.hosts[h] for h in inst.hosts],
                                      rel and self.abs_path(hname, rel))

    def host_values(self, hname: str, index: int) -> dict[str, str | int]:
        """What placeholders of a host stand for (placeholders.HOST_NAMES)."""
        host = self.hosts[hname]
        return {"host.name": hname, "host.address": host.address, "host.server_id": host.server_id,
                "host.index": index, "host.nic": host.nic or ""}  # validated: known where it is used

    def service_programs(self, svc: Service) -> None:
        for index, hname in enumerate(svc.hosts):
            host = self.hosts[hname]
            argv, probe, limits, via_numactl, cwd = self._service_argv(svc, host)
            values = self.host_values(hname, index)
            if isinstance(svc.spec, GenericSpec):
                argv = tuple(fill(a, values) for a in argv)
            env = {**{k: fill(v, values) for k, v in svc.env}, "LAUNCHER_DEPLOYMENT": self.t.name, "LAUNCHER_SERVICE": svc.name,
                   "LAUNCHER_HOST": hname, "LAUNCHER_HOST_ADDRESS": host.address}
            self.programs[hname].append(Program(
                name=svc.name, host=hname, owner=svc.name, kind="service", argv=argv, cwd=cwd,
                env=tuple(env.items()), limits=limits, numa_via_numactl=via_numactl,
                probe=probe_on(svc.probe, index == 0) or probe,
                ports=service_ports(svc.spec), container=svc.container,
                # a datasystem worker drives the NPUs it does RH2D with (its container gets them)
                devices=svc.spec.remote_h2d_devices if isinstance(svc.spec, DatasystemSpec) else ()))

    def _service_argv(self, svc: Service, host: Host) -> tuple[tuple[str, ...], Probe | None, Limits, bool,
                                                                 str | None]:
        spec = svc.spec
        if isinstance(spec, EtcdSpec):
            return etcd_argv(svc, spec, host, self.hosts, self.root(host)), etcd_probe(spec, host), \
                svc.limits, True, None
        if isinstance(spec, DatasystemSpec):
            etcd, etcd_spec = self.service(spec.etcd, EtcdSpec)
            endpoints = ",".join(f"{self.hosts[h].address}:{etcd_spec.client_port}" for h in etcd.hosts)
            limits = svc.limits if svc.limits.memlock else Limits("unlimited", svc.limits.nofile, svc.limits.numa)
            return dscli_argv(spec, f"{host.address}:{spec.port}", endpoints, svc.limits), \
                Probe(tcp=f"{host.address}:{spec.port}"), limits, False, None
        assert isinstance(spec, GenericSpec)
        return spec.command, None, svc.limits, True, spec.cwd

    @paused
    def run(self) -> Plan:
        self.standalone_tables()
        self.pd_tables()
        self.datadist()
        for svc in self.t.services:
            self.service_programs(svc)
        for inst in self.t.instances:
            self.instance_programs(inst)
        hosts = tuple(HostPlan(h, self.root(h), containers.with_boxes(self.t, self.programs[h.name], h),
                               tuple(self.files[h.name][p] for p in sorted(self.files[h.name])))
                      for h in self.t.hosts)
        instances = tuple(InstancePlan(
            name=i.name, role=i.role, world_size=len(self.placement[i.name]), hosts=i.hosts,
            ranks=tuple(self.placement[i.name]),
            master=f"{self.hosts[i.hosts[0]].address}:{self.rdzv[i.name]}",
            ranktable_path=self.ranktable_path[i.name], ranktable=self.ranktable[i.name])
            for i in self.t.instances)
        edges = dependency_edges(self.t)
        return Plan(self.t.name, hosts, instances, start_levels(edges), FrozenMap(self.pd_globals),
                    self.t.agent_port, self.t.preflight, self.t.restart_max, self.t.restart_window,
                    tuple(self.links), FrozenMap((k, v) for k, v in edges.items() if v),
                    FrozenMap((i.name, i.restart_with) for i in self.t.instances if i.restart_with),
                    metrics_port=self.t.metrics_port, metrics_listen=self.t.metrics_listen)


# what a rank's env has of its own (instance_programs)
RANK_NAMES = frozenset({"RANK", "LOCAL_RANK", "RANK_ID", "DEVICE_ID", "LAUNCHER_DEVICE_IP",
                        "LAUNCHER_DATADIST_FILE", "LAUNCHER_DATADIST_CLUSTER_ID"})


def _env(head: Env, own: Env, tail: Env, apart: bool) -> Env:
    """``{**head, **own, **tail}`` as pairs. ``apart``: no name is in two of them (the usual case):
    then the pairs a host's ranks share are the same tuple objects in each env, made once per host."""
    if apart:
        return head + own + tail
    return tuple({**dict(head), **dict(own), **dict(tail)}.items())


def _program(name: str, hname: str, inst: Instance, argv: tuple[str, ...], env: Env, probe: Probe | None,
             r: RankInfo | None, devices: tuple[int, ...]) -> Program:
    """A rank (``r``), or an instance's one process on a host (r None)."""
    return Program(name=name, host=hname, owner=inst.name, kind="rank", argv=argv, cwd=inst.cwd,
                   env=env, limits=inst.limits, numa_via_numactl=True, probe=probe,
                   rank=None if r is None else r.rank, local_rank=None if r is None else r.local_rank,
                   devices=devices, container=inst.container)


def host_root(deployment: str, host: Host) -> str:
    """The deployment's directory on a host. The host's name is part of it so that hosts sharing
    a filesystem (local "hosts" on one machine, a deploy_dir on NFS) never share sockets or links."""
    return f"{host.deploy_dir.rstrip('/')}/{deployment}/{host.name}"


def _group_by_server(slots: list[RankSlot], a3: bool) -> list[RankSlot]:
    """Order a link's members so each server's devices are adjacent (and on A3 each pod's servers);
    rank ids follow that order."""
    order: dict[tuple[str, str], list[RankSlot]] = {}
    pods: list[str] = list(dict.fromkeys(str(s.super_pod_id) for s in slots)) if a3 else [""]
    for s in slots:
        order.setdefault((str(s.super_pod_id) if a3 else "", s.server_id), []).append(s)
    flat = [s for key in sorted(order, key=lambda k: pods.index(k[0])) for s in order[key]]
    return [dataclasses.replace(s, rank_id=k) if a3 else RankSlot(s.server_id, s.device_id, s.device_ip, k,
                                                                     s.container_ip) for k, s in enumerate(flat)]
