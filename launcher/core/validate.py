"""Semantic checks on a Topology: references, duplicates, device use, PD and LLM-DataDist rules.

Pure: Topology -> list of Diagnostics (errors and warnings), all of them, in file order.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

from .errors import Diagnostic, sort_diagnostics
from . import a3_ips, containers, device_rules, env_rules, frameworks, gcpause, nic_rules, placeholders, stack_versions, superpod
from .graph import dependency_edges, find_cycle, link_edges
from .model import DatasystemSpec, DDCluster, EtcdSpec, Instance, Probe, Service, Topology
from .placement import rank_placement, service_ports
from .yamlsrc import Path, Source, format_path

MAX_SOCKET_PATH = 107       # sun_path is 108 bytes with its NUL
PID_SUFFIX = len(".4194304")  # supervisord binds SOCKET.<its pid> first (pid_max up to 2^22), then links it
MAX_DOMAIN_NODES = 4        # seed 001: at most 4 nodes per communication domain
WARN_DOMAINS_PER_CLUSTER = 16
MAX_DOMAINS_PER_CLUSTER = 512


class _Checker:
    def __init__(self, topo: Topology):
        self.t = topo
        self.src = topo.locs
        self.out: list[Diagnostic] = []
        self.hosts = {h.name: h for h in topo.hosts}
        self.env_reported: set[tuple] = set()  # defaults.env is said once, not for every instance

    def err(self, path: tuple, message: str, severity: str = "error") -> None:
        loc = self.src.value_loc(path) if self.src is not None else None
        self.out.append(Diagnostic(loc, format_path(path), message, severity))

    def warn(self, path: tuple, message: str) -> None:
        self.err(path, message, "warning")

    def unique(self, items: Iterable[tuple[tuple, object]], what: str) -> None:
        first: dict[object, tuple] = {}
        for path, value in items:
            if value in first:
                self.err(path, f"duplicate {what} {value!r} (also at {format_path(first[value])})")
            else:
                first[value] = path

    def host_ref(self, path: tuple, name: str) -> bool:
        if name not in self.hosts:
            self.err(path, f"unknown host {name!r} (hosts: {', '.join(self.hosts)})")
            return False
        return True

    # --- hosts and devices -------------------------------------------------------------
    def check_hosts(self) -> None:
        hs = self.t.hosts
        self.unique(((("hosts", i, "name"), h.name) for i, h in enumerate(hs)), "host name")
        self.unique(((("hosts", i, "address"), h.address) for i, h in enumerate(hs)), "host address")
        self.unique(((("hosts", i, "server_id"), h.server_id) for i, h in enumerate(hs)), "server_id")
        ips: list[tuple[tuple, str]] = []
        for i, h in enumerate(hs):
            for d in h.devices:
                path = ("hosts", i, "devices", str(d.id))
                if d.ip is None:
                    self.err(path, f"host {h.name} device {d.id}: IP is left to discovery and not in the "
                                   f"lock file yet; run `launcher discover {self.t.file}`")
                elif not _is_ipv4(d.ip):
                    self.err(path, f"host {h.name} device {d.id}: {d.ip!r} is not an IPv4 address")
                else:
                    ips.append((path, d.ip))
            sock = f"{h.deploy_dir.rstrip('/')}/{self.t.name}/{h.name}/run/supervisor.sock"
            if len(sock.encode()) + PID_SUFFIX > MAX_SOCKET_PATH:
                self.err(("hosts", i, "deploy_dir") if "deploy_dir" in _keys(self.src, ("hosts", i)) else
                         ("defaults", "deploy_dir"),
                         f"host {h.name}: deploy_dir is too long: supervisord's socket {sock} would be "
                         f"{len(sock.encode())} bytes (+ .<pid> while it binds), a unix socket path {MAX_SOCKET_PATH}")
            if h.container_ip is not None and not _is_ipv4(h.container_ip):
                self.err(("hosts", i, "container_ip"), f"{h.container_ip!r} is not an IPv4 address")
        self.unique(ips, "device IP")

    # --- instances -----------------------------------------------------------------------
    def check_instances(self) -> None:
        names = [(("instances", i, "name"), x.name) for i, x in enumerate(self.t.instances)]
        names += [(("services", i, "name"), x.name) for i, x in enumerate(self.t.services)]
        self.unique(names, "instance/service name")
        used: dict[tuple[str, int], str] = {}
        pd_members = {n for g in self.t.pd_groups for n in (*g.prefill, *g.decode)}
        for i, inst in enumerate(self.t.instances):
            base = ("instances", i)
            self.unique((((*base, "hosts", k), h) for k, h in enumerate(inst.hosts)), "host in instance")
            counts: list[tuple[str, int]] = []
            for k, hname in enumerate(inst.hosts):
                if not self.host_ref((*base, "hosts", k), hname):
                    continue
                host = self.hosts[hname]
                ids = inst.devices if inst.devices is not None else tuple(d.id for d in host.devices)
                if not ids:
                    self.err((*base, "hosts", k), f"instance {inst.name}: host {hname} declares no devices")
                for dev in ids:
                    if host.device(dev) is None:
                        self.err((*base, "devices"), f"instance {inst.name}: device {dev} is not declared on "
                                                     f"host {hname} (declared: {[d.id for d in host.devices]})")
                        continue
                    owner = used.setdefault((hname, dev), inst.name)
                    if owner != inst.name:
                        self.err((*base, "hosts", k), f"NPU {dev} on host {hname} is used by both instance "
                                                      f"{owner} and instance {inst.name}")
                counts.append((hname, len(ids)))
            if len({c for _, c in counts}) > 1:
                detail = ", ".join(f"{h}={c}" for h, c in counts)
                self.err((*base, "hosts"), f"instance {inst.name}: hosts have different device counts ({detail}); "
                                           "an HCCL world needs the same number of ranks per host, set `devices:`")
            if inst.devices is not None:
                self.unique((((*base, "devices", k), d) for k, d in enumerate(inst.devices)), "device in instance")
            self.check_env(base, inst.env, env_rules.reserved_for(inst, inst.name in pd_members))
            self.check_probe(base, inst.probe)
            if inst.datasystem is not None:
                self.check_datasystem_ref(i, inst.name, inst.hosts, inst.datasystem)

    def check_env(self, base: tuple, env: Iterable[tuple[str, str]], reserved: frozenset[str]) -> None:
        """A user value for what the launcher sets would be silently replaced: an error, once per place."""
        own = _keys(self.src, (*base, "env"))
        for key, message in env_rules.refused(env, reserved):
            path = (*base, "env", key) if key in own or self.src is None else ("defaults", "env", key)
            if path not in self.env_reported:
                self.env_reported.add(path)
                self.err(path, message)

    def check_probe(self, base: tuple, probe: Probe | None) -> None:
        """A log probe's pattern is compiled here, not on the host after the ready timeout."""
        if probe is None or probe.log is None:
            return
        try:
            re.compile(probe.log)
        except re.error as exc:
            self.err((*base, "probe", "log"), f"{probe.log!r} is not a regular expression: {exc.msg} "
                                              f"(at character {exc.pos})")

    def check_datasystem_ref(self, i: int, name: str, hosts: tuple[str, ...], ds_name: str) -> None:
        svc = self.t.service(ds_name)
        path = ("instances", i, "datasystem")
        if svc is None or not isinstance(svc.spec, DatasystemSpec):
            self.err(path, f"instance {name}: {ds_name!r} is not a datasystem service")
            return
        missing = [h for h in hosts if h not in svc.hosts]
        if missing:
            self.err(path, f"instance {name}: datasystem {ds_name} has no worker on host(s) {', '.join(missing)}")

    # --- services ------------------------------------------------------------------------
    def check_services(self) -> None:
        for i, svc in enumerate(self.t.services):
            base = ("services", i)
            for k, hname in enumerate(svc.hosts):
                self.host_ref((*base, "hosts", k), hname)
            self.unique((((*base, "hosts", k), h) for k, h in enumerate(svc.hosts)), "host in service")
            self.check_env(base, svc.env, frozenset())
            self.check_probe(base, svc.probe)
            spec = svc.spec
            if isinstance(spec, DatasystemSpec):
                etcd = self.t.service(spec.etcd)
                if etcd is None or not isinstance(etcd.spec, EtcdSpec):
                    self.err((*base, "etcd"), f"service {svc.name}: {spec.etcd!r} is not an etcd service")
                # vllm-ascend kv_pool.md: the RH2D worker *must* run with these
                for key, must in (("enable_huge_tlb", True), ("enable_fallocate", False)):
                    if spec.remote_h2d_devices and getattr(spec, key) is (not must):
                        self.err((*base, key), f"service {svc.name}: RH2D (remote_h2d_devices) needs the worker "
                                               f"started with --{key} {str(must).lower()}; remove {key}")
                for hname in svc.hosts:
                    host = self.hosts.get(hname)
                    for dev in spec.remote_h2d_devices:
                        if host is not None and host.device(dev) is None:
                            self.err((*base, "remote_h2d_devices"),
                                     f"service {svc.name}: device {dev} is not declared on host {hname}")

    # --- dependencies --------------------------------------------------------------------
    def check_dependencies(self) -> None:
        known = {x.name for x in self.t.instances} | {x.name for x in self.t.services}
        sections: tuple[tuple[str, Sequence[Instance | Service]], ...] = (
            ("instances", self.t.instances), ("services", self.t.services))
        for section, items in sections:
            for i, item in enumerate(items):
                for key, verb in (("depends_on", "depends on"), ("restart_with", "restarts with")):
                    for k, dep in enumerate(getattr(item, key, ())):
                        if dep not in known or dep == item.name:
                            self.err((section, i, key, k), f"{item.name} {verb} "
                                     + (f"unknown {dep!r}" if dep not in known else "itself"))
        edges = dependency_edges(self.t)
        cycle = find_cycle({k: tuple(d for d in v if d != k) for k, v in edges.items()})
        if cycle:
            first = cycle[0]
            idx = next((("instances", i) for i, x in enumerate(self.t.instances) if x.name == first), None) or \
                next(("services", i) for i, x in enumerate(self.t.services) if x.name == first)
            implied = link_edges(self.t)
            why = [f"{a} -> {b} because link {implied[(a, b)]} makes the decoder {a} wait for the prompt {b}"
                   for a, b in zip(cycle, cycle[1:]) if (a, b) in implied]
            follows = {(x.name, d) for x in self.t.instances for d in x.restart_with if d not in x.depends_on}
            why += [f"{a} -> {b} because {a} restarts with {b}" for a, b in zip(cycle, cycle[1:]) if (a, b) in follows]
            field_ = "restart_with" if idx[0] == "instances" and (first, cycle[1]) in follows else "depends_on"
            self.err((*idx, field_), f"dependency cycle: {' -> '.join(cycle)}"
                     + (f" ({'; '.join(why)})" if why else ""))

    # --- prefill/decode ------------------------------------------------------------------
    def check_pd(self) -> None:
        member: dict[str, str] = {}
        for g_i, g in enumerate(self.t.pd_groups):
            base = ("pd_groups", g_i)
            if len(g.schedulers) != 1:
                self.err((*base, "scheduler"), f"PD group {g.name} needs exactly one scheduler, "
                                               f"got {len(g.schedulers)}: {list(g.schedulers)}")
            for k, s in enumerate(g.schedulers):
                self.host_ref((*base, "scheduler") + ((k,) if len(g.schedulers) > 1 else ()), s)
            for field, role in (("prefill", "prefill"), ("decode", "decode")):
                names = getattr(g, field)
                if not names:
                    self.err((*base, field), f"PD group {g.name} needs at least one {role} instance")
                for k, name in enumerate(names):
                    inst = self.t.instance(name)
                    if inst is None:
                        self.err((*base, field, k), f"unknown instance {name!r}")
                        continue
                    if inst.role != role:
                        self.err((*base, field, k), f"instance {name} has role {inst.role}, expected {role}")
                    prev = member.setdefault(name, g.name)
                    if prev != g.name or names.count(name) > 1:
                        self.err((*base, field, k), f"instance {name} is listed twice in PD groups")
        for i, inst in enumerate(self.t.instances):
            if inst.role in ("prefill", "decode") and inst.name not in member:
                self.err(("instances", i, "role"), f"instance {inst.name} is {inst.role} but in no pd_group")

    # --- LLM-DataDist ----------------------------------------------------------------------
    def check_datadist(self) -> None:
        clusters = self.t.dd_clusters
        self.unique((((("llm_datadist", "clusters", i, "id")), c.id) for i, c in enumerate(clusters)), "cluster id")
        by_id = {c.id: c for c in clusters}
        self.unique(((("llm_datadist", "clusters", i, "instance"), (c.instance, c.rank)) for i, c in enumerate(clusters)),
                    "(instance, rank) of a cluster")
        for i, c in enumerate(clusters):
            base: Path = ("llm_datadist", "clusters", i)
            inst = self.t.instance(c.instance)
            if inst is None:
                self.err((*base, "instance"), f"unknown instance {c.instance!r}")
            elif not 0 <= c.rank < len(rank_placement(self.t, inst)):
                self.err((*base, "rank"), f"instance {inst.name} has no rank {c.rank}")
            if c.role == "prompt" and c.listen_port is None:
                self.err(base, f"cluster {c.id} is a prompt cluster and needs listen_port (the decoder links to it)")
            if c.role == "decoder" and c.listen_port is not None:
                self.err((*base, "listen_port"), f"cluster {c.id} is a decoder; only the prompt side listens")
        self.unique(((("llm_datadist", "links", i, "name"), link.name) for i, link in enumerate(self.t.dd_links)),
                    "link name")
        sides: dict[str, dict[str, int]] = {}  # instance -> role -> first cluster id
        for c in clusters:
            sides.setdefault(c.instance, {}).setdefault(c.role, c.id)
        mixed: set[str] = set()
        for i, c in enumerate(clusters):
            first = sides.get(c.instance, {})
            if c.role == "decoder" and "prompt" in first and c.instance not in mixed:
                mixed.add(c.instance)  # said once per instance
                # One instance starts as one gang: its decoder ranks cannot wait for its own
                # prompt ranks to listen, and a prompt that is also a decoder chains start orders.
                self.err(("llm_datadist", "clusters", i, "role"),
                         f"cluster {c.id} is a decoder in instance {c.instance}, which also holds prompt "
                         f"cluster {first['prompt']}; an instance is either on the prompt side (listens) or "
                         f"on the decoder side (links), because its ranks start together")
        per_cluster: Counter[int] = Counter()
        for i, link in enumerate(self.t.dd_links):
            base = ("llm_datadist", "links", i, "clusters")
            if len(link.clusters) > MAX_DOMAIN_NODES:
                self.err(base, f"link {link.name} has {len(link.clusters)} clusters; a communication domain "
                               f"holds at most {MAX_DOMAIN_NODES}")
            self.unique((((*base, k), c) for k, c in enumerate(link.clusters)), "cluster in link")
            for k, cid in enumerate(link.clusters):
                if cid not in by_id:
                    self.err((*base, k), f"unknown cluster id {cid}")
            roles = {by_id[c].role for c in link.clusters if c in by_id}
            if len(roles) == 1 and len(link.clusters) == len([c for c in link.clusters if c in by_id]):
                have = "prompt" if "prompt" in roles else "decoder"
                self.err(base, f"link {link.name} has only {have} clusters; a link needs a prompt cluster that "
                               f"listens and a decoder cluster that links to it")
            per_cluster.update(set(link.clusters))
        insts = {inst.name: (k, inst) for k, inst in enumerate(self.t.instances)}
        warned: set[str] = set()
        for c in clusters:
            found = insts.get(c.instance)
            if c.role == "prompt" and found is not None and found[1].probe is None and c.instance not in warned \
                    and per_cluster[c.id]:
                k = found[0]
                warned.add(c.instance)
                # A TCP probe of the listen address would run on the host, which does not reach the
                # device (RoCE) plane on real NPU servers; only the operator knows what "listening" looks like.
                self.warn(("instances", k, "name"),
                          f"prompt instance {c.instance} has no probe: its decoders start once its processes "
                          f"run, not once it listens; give it a probe (e.g. a log line it prints after "
                          f"LLMDataDist init, or an http endpoint)")
        for i, c in enumerate(clusters):
            n = per_cluster[c.id]
            path = ("llm_datadist", "clusters", i)
            if n > MAX_DOMAINS_PER_CLUSTER:
                self.err(path, f"cluster {c.id} is in {n} communication domains; the maximum is "
                               f"{MAX_DOMAINS_PER_CLUSTER}")
            elif n > WARN_DOMAINS_PER_CLUSTER:
                self.warn(path, f"cluster {c.id} is in {n} communication domains; more than "
                                f"{WARN_DOMAINS_PER_CLUSTER} risks device OOM and slow KV transfer")

    # --- listeners -----------------------------------------------------------------------
    def check_listeners(self) -> None:
        seen: dict[tuple[str, int], tuple[tuple, str]] = {}

        def claim(addr: str, port: int, path: tuple, what: str) -> None:
            key = (addr, port)
            if key in seen:
                other_path, other = seen[key]
                self.err(path, f"{what} listens on {addr}:{port}, already used by {other} "
                               f"({format_path(other_path)})")
            else:
                seen[key] = (path, what)

        if self.t.metrics_port == self.t.agent_port:  # both the agent's, on the same address by default
            self.err(("defaults", "metrics", "port"), f"the metrics port is the agent_port ({self.t.agent_port})")
        for i, inst in enumerate(self.t.instances):
            if inst.rendezvous_port is not None and inst.hosts and inst.hosts[0] in self.hosts:
                claim(self.hosts[inst.hosts[0]].address, inst.rendezvous_port, ("instances", i, "rendezvous_port"),
                      f"instance {inst.name} rendezvous")
        for i, svc in enumerate(self.t.services):
            for hname in svc.hosts:
                if hname not in self.hosts:
                    continue
                addr = self.hosts[hname].address
                for sp in service_ports(svc.spec):
                    claim(addr, sp.port, ("services", i, sp.key), f"service {svc.name} on {hname}")
        for i, c in enumerate(self.t.dd_clusters):
            ip = self.cluster_listen_ip(c)
            if c.listen_port is not None and ip:
                claim(ip, c.listen_port, ("llm_datadist", "clusters", i, "listen_port"), f"cluster {c.id}")

    def cluster_listen_ip(self, c: DDCluster) -> str | None:
        if c.listen_ip:
            return c.listen_ip
        inst = self.t.instance(c.instance)
        if inst is None:
            return None
        placed = rank_placement(self.t, inst)
        if c.rank >= len(placed):
            return None
        host, dev = placed[c.rank]
        d = self.hosts[host].device(dev) if host in self.hosts else None
        return d.ip if d else None

    def check_placeholders(self) -> None:
        data = self.src.data if self.src is not None else None
        if not isinstance(data, dict):
            return
        listed = placeholders.fields(data)
        for path, text, names in listed:
            for bad in placeholders.problems(text, names):
                self.err(path, bad.message)
        for path in placeholders.misplaced(data, {path for path, _, _ in listed}):
            self.err(path, "'{{' here is not filled: placeholders are filled in command, leader_args, "
                           "worker_args and env (a literal '{{' is written {{ '{{' }} there)")

    def run(self) -> list[Diagnostic]:
        self.check_hosts()
        self.check_instances()
        self.check_services()
        self.check_dependencies()
        self.check_pd()
        self.check_datadist()
        self.check_listeners()
        self.check_placeholders()
        self.out.extend(superpod.check(self.t))
        for path, message in [*frameworks.check(self.t), *stack_versions.check(self.t), *nic_rules.check(self.t),
                              *a3_ips.check(self.t)]:
            self.err(path, message)
        for path, message, severity in containers.check(self.t):
            self.err(path, message, severity)
        for path, message in device_rules.check(self.t):  # layouts the stack cannot use
            self.err(path, message)
        return sort_diagnostics(self.out)


def _keys(src: Source | None, path: tuple) -> set[str]:
    """Keys present at a path of the source document ({} when unknown)."""
    node = src.at(path) if src is not None and src.has(path) else None
    return set(node) if isinstance(node, dict) else set()


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")


def _is_ipv4(text: str) -> bool:
    """Dotted-quad IPv4 (no leading zeros), as ranktables carry them; a regex is ~10x faster
    than ipaddress for the 16k device IPs of a large cluster."""
    return _IPV4.fullmatch(text) is not None


@gcpause.paused
def validate(topo: Topology) -> list[Diagnostic]:
    """Every semantic problem of a topology (errors and warnings), in file order."""
    return _Checker(topo).run()
