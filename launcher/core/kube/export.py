"""`launcher export kubernetes`: a validated topology -> a kustomize directory, {path: bytes}.

Deterministic: the same topology and options give the same bytes (golden directories hold them).
Refused, as errors naming the key, whatever support.py finds Kubernetes cannot express.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import json

import yaml

from ..errors import SpecErrors
from ..framework_env import MINDIE, mindie_config
from ..model import DatasystemSpec, EtcdSpec, Instance, Probe, Service, Topology
from ..pipeline import Result
from ..placement import service_ports
from ..preflight_a3 import DEFAULT_CHIPS_PER_CARD
from ..plan import Plan, Program
from . import objects as o
from .podenv import POD_DIR, POD_ENV, host_number, launch_script, marked_plan, pod_path
from .readme import readme
from .support import refusals

KEY_FILE = "rendezvous.key"
MINDIE_CONFIG = "/etc/ascend-launcher-mindie/config.json"  # beside the launch ConfigMap's directory, not in it


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # each object spelled out: no &id001 anchors between containers


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # scripts as literal blocks, so the ConfigMap reads as the script it is
    style = "|" if "\n" in value and not any(c in value for c in "\r\t") and not value.endswith(" \n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> bytes:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096,
                     allow_unicode=True).encode("utf-8")


def _programs(plan: Plan, owner: str, hosts: tuple[str, ...]) -> list[Program]:
    """The owner's one program on each of its hosts, in its hosts' order (support.py refused several)."""
    by_host = {hp.host.name: hp for hp in plan.hosts}
    return [next(p for p in by_host[h].programs if p.owner == owner and p.kind in ("rank", "service"))
            for h in hosts]


def mindie_program(p: Program) -> Program:
    """A MindIE Service pod: it finds its own server by MIES_CONTAINER_IP (its address, the table's
    container_ip, which the rendezvous sets to it) and reads the mounted config.json."""
    env = dict(p.env)
    env["MIES_CONFIG_JSON_PATH"] = MINDIE_CONFIG
    env["MIES_CONTAINER_IP"] = env["HOST_IP"]  # the pod's address (the server_id marker)
    return replace(p, env=tuple(env.items()))


def _with_flag(argv: tuple[str, ...], flag: str, value: str) -> tuple[str, ...]:
    i = argv.index(flag)
    return argv[:i + 1] + (value,) + argv[i + 2:]


class _Export:
    def __init__(self, result: Result, opts: o.Options) -> None:
        self.t: Topology = result.topology
        self.opts = opts
        self.plan = marked_plan(self.t)
        self.number = host_number(self.t)
        self.files: dict[str, dict[str, Any]] = {}
        self.pd = {n: g.name for g in self.t.pd_groups for n in g.prefill + g.decode}

    def name(self, owner: str) -> str:
        return f"{self.t.name}-{owner}"

    def waits(self, deps: tuple[str, ...]) -> list[str]:
        """tcp://HOST:PORT of what an owner depends on, as a pod reaches it (a Service's name, an
        LWS leader's stable name), for the init container to wait on before the owner starts."""
        out = []
        for dep in deps:
            inst, svc = self.t.instance(dep), self.t.service(dep)
            if inst is not None and inst.probe is not None and (inst.probe.http or inst.probe.tcp):
                target = inst.probe.http or inst.probe.tcp or ""
                port = target.split("://", 1)[-1].partition("/")[0].rsplit(":", 1)[-1]
                out.append(f"tcp://{self.name(dep)}-leader:{port}")
            elif svc is not None and isinstance(svc.spec, DatasystemSpec):
                # this node's own worker (support.py: host network), kubelet expands $(VAR) in args
                out.append(f"tcp://$(LAUNCHER_POD_IP):{svc.spec.port}")
            elif svc is not None and service_ports(svc.spec):
                out.append(f"tcp://{self.name(dep)}:{service_ports(svc.spec)[0].port}")
        return out

    def template(self, owner: str, pod: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"labels": o.labels(self.t.name, owner)}, "spec": pod}

    def instance(self, inst: Instance) -> dict[str, Any]:
        """The LeaderWorkerSet spec of an instance; writes its launch ConfigMap."""
        programs = _programs(self.plan, inst.name, inst.hosts)
        if inst.name in self.pd:  # support.py exports only PD groups none of whose stacks reads the global table
            programs = [replace(p, env=tuple(kv for kv in p.env if kv[0] != "GLOBAL_RANK_TABLE_FILE_PATH"))
                        for p in programs]
        mindie = inst.framework == MINDIE
        if mindie:
            programs = [mindie_program(p) for p in programs]
        index = {self.number[h]: j for j, h in enumerate(inst.hosts)}
        script = launch_script(programs, "LWS_WORKER_INDEX", lambda n: f"LAUNCHER_ADDR_{index[n]}", [POD_ENV])
        cm = f"{self.name(inst.name)}-launch"
        self.files[f"{cm}.configmap.yaml"] = o.config_map(cm, self.t.name, inst.name, self.opts.namespace,
                                                         {"launch.sh": script.decode("utf-8")})
        ip = self.plan.instance(inst.name)
        assert ip is not None and inst.container is not None
        npus = len(programs[0].devices)
        table = pod_path(ip.ranktable_path)
        kind = "pd-local" if inst.name in self.pd else "mindie" if mindie else "hccl"
        init = o.rendezvous_container(programs[0], npus, table, kind, self.t.agent_port, self.opts)
        hosts = [self.t.host(h) for h in inst.hosts]
        if all(h is not None and h.superpod for h in hosts):  # Atlas A3: read SDIDs and pods, table v1.2
            chips = next((h.chips_per_card for h in hosts if h is not None and h.chips_per_card), None)
            init["command"] += ["--superpod", "--chips-per-card", str(chips or DEFAULT_CHIPS_PER_CARD)]
        init["command"] += [a for w in self.waits(self.dep_names(inst.name)) for a in ("--wait", w)]
        container = inst.container

        def pod(probe: Probe | None) -> dict[str, Any]:
            main = o.main_container(inst.name, container, "launch.sh", npus, self.opts, probe, [])
            main["volumeMounts"].append({"name": "pod", "mountPath": POD_DIR, "readOnly": True})
            volumes = [{"name": "launch", "configMap": {"name": cm}}, {"name": "pod", "emptyDir": {}}]
            if mindie:
                volumes.append(self.mindie_config(inst, main))
            beside = o.labels(self.t.name, inst.datasystem) if inst.datasystem else None
            return self.template(inst.name, o.pod_spec(container, main, [init], volumes, self.opts,
                                                       o.labels(self.t.name, inst.name), beside))
        if inst.probe is not None and (inst.probe.http or inst.probe.tcp):
            self.leader_service(inst)
        if inst.probe is not None and inst.probe.on == "first_host":  # the leader alone is probed
            return o.lws_spec(len(inst.hosts), pod(None), leader=pod(inst.probe))
        return o.lws_spec(len(inst.hosts), pod(inst.probe))

    def mindie_config(self, inst: Instance, main: dict[str, Any]) -> dict[str, Any]:
        """MindIE's config.json, the same for every pod (a ConfigMap), mounted where MIES_CONFIG_JSON_PATH
        points; the volume. Its ServerConfig.ipAddress stays as the base file has it: MindIE serves
        at MIES_CONTAINER_IP, the pod's address, which overrides it (server_config.cpp GetIPAddress)."""
        assert inst.mindie is not None
        base = self.t.inputs[inst.mindie.config]
        kept = json.loads(base).get("ServerConfig", {}).get("ipAddress", "127.0.0.1")
        name = f"{self.name(inst.name)}-mindie"
        self.files[f"{name}.configmap.yaml"] = o.config_map(
            name, self.t.name, inst.name, self.opts.namespace,
            {"config.json": mindie_config(inst, base, kept).decode("utf-8")})
        # one file by subPath: a regular file, not the symlink a ConfigMap directory holds; mode 0440
        # (MindIE refuses a config.json more open than 0640)
        main["volumeMounts"].append({"name": "mindie", "mountPath": MINDIE_CONFIG, "subPath": "config.json",
                                     "readOnly": True})
        return {"name": "mindie", "configMap": {"name": name, "items": [{"key": "config.json",
                                                                        "path": "config.json", "mode": 0o440}]}}

    def leader_service(self, inst: Instance) -> None:
        """A Service to the group's leader at its probe's port: what a dependent waits for and talks to
        (a DisaggregatedSet names its LeaderWorkerSets with a revision, so their own Services move)."""
        assert inst.probe is not None
        target = inst.probe.http or inst.probe.tcp or ""
        port = int(target.split("://", 1)[-1].partition("/")[0].rsplit(":", 1)[-1])
        name = f"{self.name(inst.name)}-leader"
        svc = o.service(name, self.t.name, inst.name, self.opts.namespace, [port], headless=False)
        svc["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] = "0"
        self.files[f"{name}.service.yaml"] = svc

    def dep_names(self, owner: str) -> tuple[str, ...]:
        return tuple(self.plan.depends.get(owner, ()))

    def service(self, svc: Service) -> None:
        assert svc.container is not None
        programs = _programs(self.plan, svc.name, svc.hosts)
        if isinstance(svc.spec, DatasystemSpec):  # its etcd by the etcd's Service (every member's address)
            etcd = self.t.service(svc.spec.etcd)
            assert etcd is not None and isinstance(etcd.spec, EtcdSpec)
            programs = [replace(p, argv=_with_flag(p.argv, "--etcd_address",
                                                   f"{self.name(etcd.name)}:{etcd.spec.client_port}"))
                        for p in programs]
        name = self.name(svc.name)
        env = [o.field_env("LAUNCHER_POD_INDEX", "metadata.labels['apps.kubernetes.io/pod-index']"),
               o.field_env("LAUNCHER_POD_IP", "status.podIP")]
        peers = isinstance(svc.spec, EtcdSpec) and len(svc.hosts) > 1
        if peers:
            # an etcd cluster: every member named by its pod's stable DNS name (the headless Service
            # below), the same string on every member, as etcd derives member ids from the URLs
            index = {self.number[h]: j for j, h in enumerate(svc.hosts)}
            script = launch_script(programs, "LAUNCHER_POD_INDEX", lambda n: f"LAUNCHER_PEER_{index[n]}")
            env += [{"name": f"LAUNCHER_PEER_{j}", "value": f"{name}-{j}.{name}"} for j in range(len(svc.hosts))]
        else:
            script = launch_script(programs, "LAUNCHER_POD_INDEX", lambda n: "LAUNCHER_POD_IP")
        cm = f"{name}-launch"
        self.files[f"{cm}.configmap.yaml"] = o.config_map(cm, self.t.name, svc.name, self.opts.namespace,
                                                         {"launch.sh": script.decode("utf-8")})
        npus = len(programs[0].devices)
        main = o.main_container(svc.name, svc.container, "launch.sh", npus, self.opts, programs[0].probe, env)
        main["volumeMounts"].append({"name": "pod", "mountPath": POD_DIR})
        init = []
        waits = self.waits(self.dep_names(svc.name))
        if waits:
            init.append({"name": "wait", "image": self.opts.init_image,
                         "command": ["python3", "-I", "-S", "-c", o.RENDEZVOUS, o.RUNTIME_ZIP]
                         + [a for w in waits for a in ("--wait", w)],
                         "env": [o.field_env("LAUNCHER_POD_IP", "status.podIP")]})
        volumes = [{"name": "launch", "configMap": {"name": cm}}, {"name": "pod", "emptyDir": {}}]
        pod = o.pod_spec(svc.container, main, init, volumes, self.opts, o.labels(self.t.name, svc.name))
        ports = [p.port for p in service_ports(svc.spec)]
        # headless: the StatefulSet's pods get stable names through it (its serviceName); an etcd
        # cluster's members resolve each other before any is ready (they become ready together)
        self.files[f"{name}.service.yaml"] = o.service(name, self.t.name, svc.name, self.opts.namespace, ports,
                                                       headless=True, not_ready=peers)
        self.files[f"{name}.statefulset.yaml"] = {
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": o.meta(name, self.t.name, svc.name, self.opts.namespace),
            "spec": {"serviceName": name, "replicas": len(svc.hosts), "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": o.labels(self.t.name, svc.name)},
                     "template": self.template(svc.name, pod)}}

    def run(self) -> dict[str, bytes]:
        for inst in self.t.instances:
            if inst.name in self.pd:
                continue
            self.files[f"{self.name(inst.name)}.leaderworkerset.yaml"] = {
                "apiVersion": o.LWS_API, "kind": "LeaderWorkerSet",
                "metadata": o.meta(self.name(inst.name), self.t.name, inst.name, self.opts.namespace),
                "spec": self.instance(inst)}
        for g in self.t.pd_groups:
            roles = []
            for n in g.prefill + g.decode:
                member = self.t.instance(n)
                assert member is not None
                roles.append({"name": n, "metadata": {"labels": o.labels(self.t.name, n)},
                              "spec": self.instance(member)})
            self.files[f"{self.name(g.name)}.disaggregatedset.yaml"] = {
                "apiVersion": o.DS_API, "kind": "DisaggregatedSet",
                "metadata": o.meta(self.name(g.name), self.t.name, g.name, self.opts.namespace),
                "spec": {"roles": roles}}
        for svc in self.t.services:
            self.service(svc)
        out = {path: dump(doc) for path, doc in sorted(self.files.items())}
        kustom: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
        if self.opts.namespace:
            kustom["namespace"] = self.opts.namespace
        kustom["resources"] = sorted(out)
        # the rendezvous key stays out of the export (and of git): README says how to make the file
        kustom["secretGenerator"] = [{"name": o.KEY_SECRET, "files": [f"key={KEY_FILE}"]}]
        kustom["generatorOptions"] = {"disableNameSuffixHash": True}  # LWS pod templates name it as is
        out["kustomization.yaml"] = dump(kustom)
        out["README.md"] = readme(self.t, sorted(self.files), self.opts).encode("utf-8")
        return dict(sorted(out.items()))


def export_kubernetes(result: Result, opts: o.Options = o.Options()) -> dict[str, bytes]:
    """The export directory's files, or SpecErrors naming every key Kubernetes cannot express."""
    errors = refusals(result.topology)
    if errors:
        raise SpecErrors(errors)
    return _Export(result, opts).run()
