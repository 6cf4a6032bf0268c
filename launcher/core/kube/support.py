"""What a topology asks that Kubernetes cannot express: one error per key, never an approximation.

Each refusal names the key to change and why, at its line:col (the topology's own positions).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from ..errors import Diagnostic
from .. import stack_versions
from ..model import DatasystemSpec, GenericSpec, Instance, Probe, Service, Topology
from ..yamlsrc import Path, format_path

# DNS-1123 label; LWS names its StatefulSets and pods `<name>-<group>-<index>` and labels them with
# a revision hash, so the object name keeps room for those suffixes.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 52
NETWORKS = ("host", "bridge")  # hostNetwork, or the pod network
# what a docker/podman `run` gives that a pod spec has no field for
RUN_ONLY = "container.args are `docker run` arguments: a pod spec has no place for them"


def _address_re(address: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![0-9A-Za-z.-]){re.escape(address)}(?![0-9A-Za-z-]|\.[0-9A-Za-z])")


def pinned(texts: Iterable[tuple[Path, str]], addresses: dict[str, re.Pattern[str]]) -> list[tuple[Path, str]]:
    """(path, host) of each text that names a host's address literally (not through a placeholder)."""
    out = []
    for path, text in texts:
        for host, pattern in addresses.items():
            if pattern.search(text):
                out.append((path, host))
                break
    return out


# Why a table spanning groups is refused: it holds other groups' pod addresses, which change when
# LWS recreates one of them (on a pod failure, RecreateGroupOnPodRestart), and nothing restarts the
# others, so they run on with a table naming pods that are gone. Restarting them too would recreate
# their pods, whose new addresses make the first group's table stale in turn. Over SSH the hosts do
# not move, so such a table stays true across gang restarts.
ACROSS_GROUPS = ("LeaderWorkerSet recreates a failed group alone, on new pods with new addresses, and nothing "
                 "restarts the groups whose tables name it: they would run on with a stale table (over SSH "
                 "the hosts stay put); keep this deployment on the SSH path")


class _Refusals:
    def __init__(self, topo: Topology) -> None:
        self.t = topo
        self.out: list[Diagnostic] = []
        self.addresses = {h.name: _address_re(h.address) for h in topo.hosts}
        self.data: Any = topo.locs.data if topo.locs is not None else {}

    def err(self, path: Path, message: str) -> None:
        loc = self.t.locs.value_loc(path) if self.t.locs is not None else None
        self.out.append(Diagnostic(loc, format_path(path), f"not expressible on Kubernetes: {message}"))

    def has(self, path: Path) -> bool:
        node = self.data
        for part in path:
            if isinstance(part, str) and isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(part, int) and isinstance(node, list) and part < len(node):
                node = node[part]
            else:
                return False
        return True

    def container_path(self, owner: Path, key: str) -> Path:
        """Where a container setting comes from: the owner's own `container:` or `defaults.container`."""
        own = owner + ("container", key)
        return own if self.has(own) else ("defaults", "container", key) if self.has(
            ("defaults", "container", key)) else owner + ("container",)

    def name(self, path: Path, name: str) -> None:
        full = f"{self.t.name}-{name}"
        if not DNS_LABEL.match(full) or len(full) > MAX_NAME:
            self.err(path, f"object name {full!r} (<deployment>-<name>) must be a DNS label: lowercase "
                           f"letters, digits and '-', at most {MAX_NAME} characters")

    def texts(self, owner: Path, env: Iterable[tuple[str, str]], lists: dict[str, tuple[str, ...]]) -> None:
        items: list[tuple[Path, str]] = [(owner + (k, i), v) for k, argv in lists.items() for i, v in enumerate(argv)]
        items += [(owner + ("env", k), v) for k, v in env if self.has(owner + ("env", k))]
        items += [(("defaults", "env", k), v) for k, v in env if self.has(("defaults", "env", k))]
        for path, host in pinned(items, self.addresses):
            self.err(path, f"names host {host}'s address literally: a pod's address is known only once it is "
                           f"scheduled (use a placeholder such as {{{{ host.address }}}} or {{{{ master_addr }}}})")

    def container(self, owner: Path, c: Any) -> None:
        if c is None or c.image is None:
            self.err(owner + ("container",), "Kubernetes runs images: give the owner a `container:` with an "
                                             "`image` (or defaults.container.image)")
            return
        if c.args:
            self.err(self.container_path(owner, "args"), RUN_ONLY)
        if c.network not in NETWORKS:
            self.err(self.container_path(owner, "network"), f"network {c.network!r}: a pod has the host's "
                                                             "network (host) or the pod network (bridge)")
        if c.ipc not in ("host", "private", "shareable"):
            self.err(self.container_path(owner, "ipc"), f"ipc {c.ipc!r}: a pod has the host's IPC namespace or its own")
        if c.user is not None and c.user != "root" and not c.user.isdigit():
            self.err(self.container_path(owner, "user"), f"user {c.user!r}: a pod runs as a numeric uid "
                                                          "(runAsUser), not a name")
        for k, m in enumerate(c.mounts):
            if len(m.split(":")) > 3 or (len(m.split(":")) == 3 and m.split(":")[2] not in ("ro", "rw")):
                self.err(self.container_path(owner, "mounts") + ((k,) if self.has(owner + ("container", "mounts"))
                                                                 else ()),
                         f"mount {m!r}: a hostPath volume takes SRC:DST[:ro|rw] only")

    def probe(self, owner: Path, probe: Probe | None) -> None:
        if probe is None:
            return
        if probe.log:
            self.err(owner + ("probe", "log"), "Kubernetes has no probe on a log line (use http, tcp or command)")
        for key, target in (("http", probe.http), ("tcp", probe.tcp)):
            if target and not (target.startswith(":") or target.isdigit()):
                self.err(owner + ("probe", key), f"{target!r} names a host: a pod's probe reaches the pod "
                                                 f"itself (write :PORT{'/path' if key == 'http' else ''})")

    def limits(self, owner: Path, numa: Any) -> None:
        if numa is not None:
            self.err(owner + ("limits", "numa"), "NUMA binding is the node's CPU and memory managers' "
                                                 "(kubelet topology manager), not a pod field")

    def instance(self, k: int, inst: Instance) -> None:
        owner: Path = ("instances", k)
        self.name(owner + ("name",), inst.name)
        if inst.processes != "per_host":
            self.err(owner + ("processes",), "per_device runs one process per NPU, several per server: a "
                                             "LeaderWorkerSet pod is one server running one process "
                                             "(use processes: per_host)")
        if inst.framework == "mindie-service" and any(h is not None and h.superpod
                                                      for h in (self.t.host(n) for n in inst.hosts)):
            self.err(owner + ("framework",), "MindIE's table needs each server's container_ip, which the "
                                             "SuperPoD table (v1.2) does not carry")
        if inst.datasystem:
            if stack_versions.yuanrong_client(inst) == "yr_config":
                self.err(owner + ("framework_version",), "vllm-ascend main reads its datasystem worker from a "
                                                         "per-host file holding the node's address")
            ds = self.t.service(inst.datasystem)
            if inst.container is not None and inst.container.network != "host" or \
                    ds is not None and ds.container is not None and ds.container.network != "host":
                self.err(owner + ("datasystem",), "an instance reaches its node's datasystem worker at the node's "
                                                  "address: both need container.network host")
        if inst.restart_with:
            self.err(owner + ("restart_with",), "restarting one LeaderWorkerSet after another's restart has "
                                                "no Kubernetes form; what must restart together can be one "
                                                "instance, which restarts whole (configs/k8s-vllm-ascend-ray.yaml: "
                                                "a Ray head, its workers and the driver as one gang)")
        for path, text in [(owner + ("command", i), a) for i, a in enumerate(inst.command)] + \
                [(owner + ("env", key), v) for key, v in inst.env]:
            if "host.devices" in text:
                self.err(path, "{{ host.devices }} is the NPUs' physical ids: on Kubernetes the device plugin "
                               "chooses them")
        self.texts(owner, inst.env, {"command": inst.command, "leader_args": inst.leader_args,
                                     "worker_args": inst.worker_args})
        self.container(owner, inst.container)
        self.depends(owner, inst.depends_on)
        self.probe(owner, inst.probe)
        self.limits(owner, inst.limits.numa)

    def service(self, k: int, svc: Service) -> None:
        owner: Path = ("services", k)
        self.name(owner + ("name",), svc.name)
        if isinstance(svc.spec, DatasystemSpec) and svc.spec.remote_h2d_devices:
            self.err(owner + ("remote_h2d_devices",), "the NPUs a worker drives for RH2D are the device plugin's "
                                                      "choice, numbered from 0 in its container")
        self.texts(owner, svc.env, {"command": getattr(svc.spec, "command", ())})
        self.container(owner, svc.container)
        self.depends(owner, svc.depends_on)
        self.probe(owner, svc.probe)
        if svc.probe is not None and svc.probe.on == "first_host" and len(svc.hosts) > 1:
            self.err(owner + ("probe", "on"), "a StatefulSet's pods share one template: a service's probe runs "
                                              "on every pod (an instance's `on: first_host` exports)")
        self.limits(owner, svc.limits.numa)

    def depends(self, owner: Path, deps: tuple[str, ...]) -> None:
        """A dependency is waited for by its port (an init container): it needs an http/tcp probe or a port."""
        for k, dep in enumerate(deps):
            inst, svc = self.t.instance(dep), self.t.service(dep)
            if inst is not None and not (inst.probe and (inst.probe.http or inst.probe.tcp)):
                self.err(owner + ("depends_on", k), f"{dep} has no http or tcp probe: a pod waits for what it "
                                                     "depends on by its port")
            if svc is not None and isinstance(svc.spec, GenericSpec) and not svc.spec.ports:
                self.err(owner + ("depends_on", k), f"{dep} has no ports: a pod waits for what it depends on "
                                                     "by its port")

    def run(self) -> list[Diagnostic]:
        for k, h in enumerate(self.t.hosts):
            if h.container_ip:
                self.err(("hosts", k, "container_ip"), "a host-pinned address: a pod's address is its own")
        for k, inst in enumerate(self.t.instances):
            self.instance(k, inst)
        for k, svc in enumerate(self.t.services):
            self.service(k, svc)
        for k, g in enumerate(self.t.pd_groups):
            members = [self.t.instance(n) for n in g.prefill + g.decode]
            if any(m is None or m.framework != "vllm-ascend" for m in members):
                self.err(("pd_groups", k), "its instances read the PD global ranktable, one file naming every "
                                           f"prefill and decode group's servers: {ACROSS_GROUPS} (vllm-ascend "
                                           "instances read none and export)")
        if self.t.dd_clusters or self.t.dd_links:
            self.err(("llm_datadist",), f"each LLM-DataDist link table names both linked groups' devices: "
                                        f"{ACROSS_GROUPS}")
        return self.out


def refusals(topo: Topology) -> list[Diagnostic]:
    """Every key of the topology Kubernetes cannot express, as errors (empty: it exports)."""
    return _Refusals(topo).run()
