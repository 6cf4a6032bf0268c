"""Parsed topology document -> typed Topology: schema-checked, defaults applied.

``build_topology`` collects every structural error before giving up; semantic checks
(duplicates, cycles, references) live in ``validate``. Reading the file is the caller's
(deploy.files.read_source).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .gcpause import paused
from .errors import Diagnostic, Loc, SpecErrors, sort_diagnostics
from .model import (DEFAULT_DEPLOY_DIR, DISCOVER, DatasystemSpec, DDCluster,
                    Container, DDLink, Device, Env, EtcdSpec, GenericSpec, Host, Instance, Limits, MindieSpec, Numa, PDGroup,
                    Probe, Service, Ssh, Topology)
from .schema import Check, check_schema
from .strings import check_strings
from .yamlsrc import Source

DeviceFacts = Mapping[tuple[str, int], str]  # (host name, device id) -> discovered device IP
NicFacts = Mapping[str, str]  # host name -> the interface holding its address, as `launcher discover` read it


@dataclass(frozen=True)
class SuperPodFacts:
    """What `launcher discover` read on Atlas A3 hosts (npu-smi info -t spod-info)."""

    pods: Mapping[str, str] = field(default_factory=dict)              # host name -> Super Pod ID
    sdids: Mapping[tuple[str, int], int] = field(default_factory=dict)  # (host, device id) -> SDID
    nic_ips: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (host, device id) -> RoCE NIC IP


def env_value(value: Any) -> str:
    """YAML scalars become the text a shell user would expect (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(value)
    return str(value)


def _env(*layers: Mapping[str, Any] | None) -> Env:
    merged: dict[str, str] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            merged.pop(key, None)  # a later layer moves the key to its own position
            merged[key] = env_value(value)
    return tuple(merged.items())


def _argv(items: list | None) -> tuple[str, ...]:
    return tuple(env_value(x) for x in (items or ()))


def _limits(*layers: Mapping[str, Any] | None) -> Limits:
    memlock = nofile = numa = None
    for layer in layers:
        if not layer:
            continue
        if "memlock" in layer:
            memlock = env_value(layer["memlock"])
        nofile = layer.get("nofile", nofile)
        if "numa" in layer:
            n = layer["numa"]
            numa = Numa(n.get("cpunodebind"), n.get("physcpubind"), n.get("membind"),
                        bool(n.get("localalloc", False)))
    return Limits(memlock, nofile, numa)


def _container(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> Container | None:
    """defaults.container, then the owner's own keys on top; `container: null` (either level) runs on the host."""
    if "container" in own and own["container"] is None:
        return None
    merged = {**(defaults.get("container") or {}), **(own.get("container") or {})}
    if not merged:
        return None
    return Container(
        image=merged.get("image"), engine=merged.get("engine", "docker"), mounts=tuple(merged.get("mounts", ())),
        shm_size=merged.get("shm_size"), privileged=merged.get("privileged", False), user=merged.get("user"),
        driver_mounts=merged.get("driver_mounts", True), network=merged.get("network", "host"),
        ipc=merged.get("ipc", "host"), init=merged.get("init", True),
        stop_timeout=float(merged.get("stop_timeout", 20.0)), args=tuple(merged.get("args", ())))


def _probe(p: Mapping[str, Any] | None) -> Probe | None:
    if not p:
        return None
    tcp = p.get("tcp")
    return Probe(http=p.get("http"), tcp=None if tcp is None else str(tcp),
                 command=_argv(p["command"]) if "command" in p else None, log=p.get("log"),
                 timeout=float(p.get("timeout", 5.0)), period=float(p.get("period", 1.0)),
                 on=p.get("on", "every_host"))


def _metrics(defaults: Mapping[str, Any]) -> tuple[int | None, str]:
    """defaults.metrics: (port, listen); port None when it is false (no endpoint)."""
    m = defaults.get("metrics", True)
    if m is False:
        return None, "address"
    m = m if isinstance(m, dict) else {}
    return m.get("port", 29391), m.get("listen", "address")


def _host(h: Mapping[str, Any], defaults: Mapping[str, Any], facts: DeviceFacts, a3: SuperPodFacts,
          nics: NicFacts) -> Host:
    pod_facts, sdid_facts = a3.pods, a3.sdids
    nic = h.get("nic")
    nic_discover = nic == DISCOVER
    if nic is None or nic_discover:  # the topology's own name wins over what discovery read
        nic = nics.get(h["name"])
    ssh = {**defaults.get("ssh", {}), **h.get("ssh", {})}
    devices = []
    pod = h.get("super_pod_id")
    pod_discover = pod == DISCOVER
    if pod_discover:
        pod = pod_facts.get(h["name"])
    for id_text, ip in h.get("devices", {}).items():
        device_id = int(id_text)
        if isinstance(ip, str) and ip != DISCOVER:  # the usual `N: <ip>`: nothing to look up
            devices.append(Device(device_id, ip))
            continue
        sdid: Any = ip.get("super_device_id") if isinstance(ip, dict) else None
        nic_ip: Any = ip.get("nic_ip") if isinstance(ip, dict) else None
        nic_ip_discover = nic_ip == DISCOVER
        if nic_ip_discover:
            nic_ip = a3.nic_ips.get((h["name"], device_id))
        if isinstance(ip, dict):
            ip = ip["ip"]
        # on a SuperPoD host a bare `discover` means the vnic IP and the SDID both
        sdid_discover = sdid == DISCOVER or (sdid is None and ip == DISCOVER and "super_pod_id" in h)
        if sdid_discover:
            sdid = sdid_facts.get((h["name"], device_id))
        discover = ip == DISCOVER
        if discover:
            ip = facts.get((h["name"], device_id))
        devices.append(Device(device_id, ip, discover, sdid, sdid_discover, nic_ip, nic_ip_discover))
    return Host(
        name=h["name"], address=h["address"], server_id=h.get("server_id", h["address"]),
        container_ip=h.get("container_ip"), transport=h.get("transport", "ssh"),
        ssh=Ssh(ssh.get("user"), ssh.get("port", 22), ssh.get("identity_file")),
        deploy_dir=h.get("deploy_dir", defaults.get("deploy_dir", DEFAULT_DEPLOY_DIR)),
        devices=tuple(devices), hccn_tool=h.get("hccn_tool", defaults.get("hccn_tool")),
        dcmi_lib=h.get("dcmi_lib", defaults.get("dcmi_lib")),
        super_pod_id=None if pod is None else str(pod), pod_discover=pod_discover,
        chips_per_card=h.get("chips_per_card"), nic=nic, nic_discover=nic_discover)


def _instance(i: Mapping[str, Any], defaults: Mapping[str, Any]) -> Instance:
    return Instance(
        name=i["name"], role=i.get("role", "standalone"), hosts=tuple(i["hosts"]),
        devices=tuple(i["devices"]) if "devices" in i else None,
        processes=i.get("processes", "per_device"), command=_argv(i["command"]), cwd=i.get("cwd"),
        env=_env(defaults.get("env"), i.get("env")),
        rendezvous_port=i.get("rendezvous_port"),
        probe=_probe(i.get("probe")), limits=_limits(defaults.get("limits"), i.get("limits")),
        depends_on=tuple(i.get("depends_on", ())), datasystem=i.get("datasystem"),
        leader_args=_argv(i.get("leader_args")), worker_args=_argv(i.get("worker_args")),
        framework=i.get("framework"), framework_version=i.get("framework_version"),
        mindie=MindieSpec(**i["mindie"]) if "mindie" in i else None,
        container=_container(defaults, i), restart_with=tuple(i.get("restart_with", ())))


def _service(s: Mapping[str, Any], defaults: Mapping[str, Any]) -> Service:
    kind = s["kind"]
    if kind == "etcd":
        spec: Any = EtcdSpec(**{k: s[k] for k in ("client_port", "peer_port", "data_dir", "listen", "binary")
                                if k in s})
    elif kind == "datasystem":
        spec = DatasystemSpec(
            etcd=s["etcd"], port=s.get("port", 31501), arena_per_tenant=s.get("arena_per_tenant", 1),
            remote_h2d_devices=tuple(s.get("remote_h2d_devices", ())),
            enable_huge_tlb=s.get("enable_huge_tlb"), enable_fallocate=s.get("enable_fallocate"),
            enable_worker_worker_batch_get=s.get("enable_worker_worker_batch_get", False),
            shared_memory_size_mb=s.get("shared_memory_size_mb"), extra_args=_argv(s.get("extra_args")),
            dscli=s.get("dscli", "dscli"))
    else:
        spec = GenericSpec(command=_argv(s["command"]), cwd=s.get("cwd"), ports=tuple(s.get("ports", ())))
    return Service(name=s["name"], kind=kind, hosts=tuple(s.get("hosts", ())),
                   env=_env(defaults.get("env"), s.get("env")),
                   limits=_limits(defaults.get("limits"), s.get("limits")),
                   depends_on=tuple(s.get("depends_on", ())), probe=_probe(s.get("probe")), spec=spec,
                   container=_container(defaults, s))


def _pd_group(g: Mapping[str, Any]) -> PDGroup:
    sched = g["scheduler"]
    return PDGroup(g["name"], (sched,) if isinstance(sched, str) else tuple(sched),
                   tuple(g["prefill"]), tuple(g["decode"]))


def said(schema_diag: Diagnostic, strings: list[Diagnostic]) -> bool:
    """`name: "a\n"` also fails its pattern, an env key "B\n" its mapping's propertyNames: the
    string rule's word (which character, which rule) is the clearer one, said once."""
    return any(d.path == schema_diag.path or (d.path.startswith(schema_diag.path + ".") and
                                              "propertyNames" in schema_diag.message) for d in strings)


@paused
def build_topology(src: Source, facts: DeviceFacts | None = None, check: Check | None = None,
                   a3: SuperPodFacts | None = None, inputs: Mapping[str, bytes] | None = None,
                   nics: NicFacts | None = None) -> Topology:
    """Schema-valid data -> Topology. Raises SpecErrors listing every structural problem.

    ``check``: a compiled check of the schema (schema.check_schema); ``inputs``: the files the
    topology names, read by the operator side (deploy.inputs); ``nics``: host -> interface from the lock file."""
    if isinstance(src.data, dict):
        strings = check_strings(src)
        diags = [d for d in check_schema(src, check) if not said(d, strings)] + strings
    else:
        diags = [Diagnostic(Loc(src.file, 1, 1), "", "the top level must be a mapping (hosts:, instances:, ...)")]
    if diags:
        raise SpecErrors(sort_diagnostics(diags))
    d = src.data
    defaults = d.get("defaults", {})
    facts = facts or {}
    dd = d.get("llm_datadist", {})
    return Topology(
        file=src.file, name=d["name"],
        hosts=tuple(_host(h, defaults, facts, a3 or SuperPodFacts(), nics or {}) for h in d["hosts"]),
        instances=tuple(_instance(i, defaults) for i in d.get("instances", [])),
        services=tuple(_service(s, defaults) for s in d.get("services", [])),
        pd_groups=tuple(_pd_group(g) for g in d.get("pd_groups", [])),
        dd_clusters=tuple(DDCluster(c["id"], c["instance"], c.get("rank", 0), c["role"], c.get("listen_port"),
                                    c.get("listen_ip")) for c in dd.get("clusters", [])),
        dd_links=tuple(DDLink(link["name"], tuple(link["clusters"])) for link in dd.get("links", [])),
        agent_port=defaults.get("agent_port", 29390),
        metrics_port=_metrics(defaults)[0], metrics_listen=_metrics(defaults)[1],
        preflight=defaults.get("preflight", True),
        restart_max=defaults.get("restart", {}).get("max", 3),
        restart_window=float(defaults.get("restart", {}).get("window", 600.0)),
        locs=src, inputs=dict(inputs or {}))

