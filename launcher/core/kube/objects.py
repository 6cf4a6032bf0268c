"""The Kubernetes objects of an export, as plain dicts (export.py writes them as YAML).

An instance is one LeaderWorkerSet of one group: `size` = its hosts, pod j = its j-th host (the
leader, LWS_WORKER_INDEX 0, is the host of rank 0), restartPolicy RecreateGroupOnPodRestart (our
gang restart). Every pod runs the same template: its launch script (a ConfigMap) picks its own env
and argv by LWS_WORKER_INDEX, after the rendezvous init container wrote the group's ranktable.
A service is a StatefulSet (one pod per host, each on its own node) with a Service for its ports.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..containers import DRIVER_MOUNTS
from ..defaults import INIT_IMAGE, NPU_RESOURCE
from ..model import Container, Probe
from ..plan import Program
from .podenv import POD_DIR

LWS_API = "leaderworkerset.x-k8s.io/v1"
DS_API = "disaggregatedset.x-k8s.io/v1"
LAUNCH_DIR = "/etc/ascend-launcher"
RUNTIME_ZIP = "/opt/ascend-launcher/site.zip"   # where the init image holds the launcher's host side
KEY_SECRET = "rendezvous-key"
DRIVER_LIBS = "/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver"                   # kustomize's secretGenerator makes it from a local file
RENDEZVOUS = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
              "runpy.run_module('launcher.host.rendezvous', run_name='__main__', alter_sys=True)")


@dataclass(frozen=True)
class Options:
    """What the operator chooses for the cluster (flags of `launcher export kubernetes`)."""

    npu_resource: str = NPU_RESOURCE
    init_image: str = INIT_IMAGE
    volcano: bool = False
    namespace: str | None = None


def labels(deployment: str, owner: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": owner, "app.kubernetes.io/part-of": deployment,
            "app.kubernetes.io/managed-by": "ascend-launcher"}


def meta(name: str, deployment: str, owner: str, ns: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if ns:
        out["namespace"] = ns
    out["labels"] = labels(deployment, owner)
    return out


def probe(p: Probe | None) -> dict[str, Any] | None:
    """A topology probe as a readinessProbe on the pod itself (support.py refused a host in it)."""
    if p is None:
        return None
    out: dict[str, Any]
    if p.http:
        target = p.http.split("://", 1)[-1]
        hostport, _, path = target.partition("/")
        out = {"httpGet": {"path": "/" + path, "port": int(hostport.rsplit(":", 1)[-1])}}
    elif p.tcp:
        out = {"tcpSocket": {"port": int(p.tcp.rsplit(":", 1)[-1])}}
    elif p.command:
        out = {"exec": {"command": list(p.command)}}
    else:
        return None
    return {**out, "periodSeconds": max(1, round(p.period)), "timeoutSeconds": max(1, round(p.timeout))}


def _mounts(c: Container) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) of a container's host mounts and driver paths (hostPath)."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    specs = [(f"mount-{k}", m) for k, m in enumerate(c.mounts)] + \
        [(f"driver-{k}", m) for k, m in enumerate(DRIVER_MOUNTS if c.driver_mounts else ())]
    for name, spec in specs:
        parts = spec.split(":")
        volumes.append({"name": name, "hostPath": {"path": parts[0]}})
        mounts.append({"name": name, "mountPath": parts[1] if len(parts) > 1 else parts[0],
                       "readOnly": len(parts) > 2 and parts[2] == "ro"})
    if c.shm_size:
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(c.shm_size)}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _quantity(docker_size: str) -> str:
    """docker's 1g / 512m as a Kubernetes quantity (1Gi / 512Mi)."""
    units = {"b": "", "k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}
    s = docker_size.strip().lower()
    return s[:-1] + units[s[-1]] if s and s[-1] in units else s


def _security(c: Container) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.privileged:
        out["privileged"] = True
    if c.user is not None:
        out["runAsUser"] = 0 if c.user == "root" else int(c.user)
    return out


def pod_spec(c: Container, main: dict[str, Any], init: list[dict[str, Any]], volumes: list[dict[str, Any]],
             opts: Options, anti_affinity: dict[str, str], affinity: dict[str, str] | None = None) -> dict[str, Any]:
    host_volumes, mounts = _mounts(c)
    main["volumeMounts"] = main.get("volumeMounts", []) + mounts
    for ic in init:
        ic["volumeMounts"] = ic.get("volumeMounts", []) + [m for m in mounts if m["name"].startswith("driver")]
    spec: dict[str, Any] = {}
    if opts.volcano:
        spec["schedulerName"] = "volcano"
    if c.network == "host":  # HCCL and the rendezvous use the node's addresses
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if c.ipc == "host":
        spec["hostIPC"] = True
    spec["terminationGracePeriodSeconds"] = int(c.stop_timeout)
    # one pod per server, as one host of the topology (the SSH path's one container per host)
    spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": anti_affinity}, "topologyKey": "kubernetes.io/hostname"}]}}
    if affinity:  # on a node where this runs (an instance beside its node's datasystem worker)
        spec["affinity"]["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": affinity}, "topologyKey": "kubernetes.io/hostname"}]}
    if init:
        spec["initContainers"] = init
    spec["containers"] = [main]
    spec["volumes"] = volumes + host_volumes
    return spec


def field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def main_container(name: str, c: Container, launch: str, npus: int, opts: Options,
                   ready: Probe | None, extra_env: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": c.image, "command": ["/bin/sh", f"{LAUNCH_DIR}/{launch}"]}
    if extra_env:
        out["env"] = extra_env
    if npus:
        out["resources"] = {"limits": {opts.npu_resource: npus}, "requests": {opts.npu_resource: npus}}
    rp = probe(ready)
    if rp:
        out["readinessProbe"] = rp
    sec = _security(c)
    if sec:
        out["securityContext"] = sec
    out["volumeMounts"] = [{"name": "launch", "mountPath": LAUNCH_DIR, "readOnly": True}]
    return out


def rendezvous_container(program: Program, npus: int, table_path: str, table_kind: str, port: int,
                         opts: Options) -> dict[str, Any]:
    """The init container: reads this pod's NPUs' device IPs, meets the group's other pods at the
    leader, and writes the group's ranktable and addresses into the pod's emptyDir (host/rendezvous.py)."""
    devices = ",".join(str(d) for d in program.devices)
    return {
        "name": "rendezvous", "image": opts.init_image,
        "command": ["python3", "-I", "-S", "-c", RENDEZVOUS, RUNTIME_ZIP,
                    "--port", str(port), "--dir", POD_DIR, "--table", table_path, "--format", table_kind,
                    "--devices", devices],
        "env": [field_env("LAUNCHER_POD_IP", "status.podIP"), field_env("LAUNCHER_POD_NAME", "metadata.name"),
                {"name": "LD_LIBRARY_PATH", "value": DRIVER_LIBS},  # hccn_tool's, from the driver mount
                {"name": "LAUNCHER_RENDEZVOUS_KEY", "valueFrom": {"secretKeyRef": {"name": KEY_SECRET,
                                                                                   "key": "key"}}}],
        "resources": {"limits": {opts.npu_resource: npus}, "requests": {opts.npu_resource: npus}},
        "volumeMounts": [{"name": "pod", "mountPath": POD_DIR}],
    }


def config_map(name: str, deployment: str, owner: str, ns: str | None, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, deployment, owner, ns), "data": data}


def lws_spec(size: int, template: dict[str, Any], leader: dict[str, Any] | None = None) -> dict[str, Any]:
    """``leader``: the leader pod's own template, where it differs (a probe on the first host only)."""
    lwt: dict[str, Any] = {"size": size, "restartPolicy": "RecreateGroupOnPodRestart"}
    if leader is not None:
        lwt["leaderTemplate"] = leader
    lwt["workerTemplate"] = template
    spec: dict[str, Any] = {
        "replicas": 1,
        "leaderWorkerTemplate": lwt,
        # LeaderCreated: the workers start with the leader, as a gang starts on all its hosts at once;
        # a leader that becomes ready only once its workers joined (vLLM DP, MindIE) never would first
        "startupPolicy": "LeaderCreated",
        # as `up --strategy rolling` with its default --max-unavailable 1: one group down at a time, no
        # extra group (an extra group would need a second set of servers' NPUs)
        "rolloutStrategy": {"type": "RollingUpdate",
                            "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0}},
    }
    return spec


def service(name: str, deployment: str, owner: str, ns: str | None, ports: list[int], headless: bool,
            not_ready: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if headless:
        spec["clusterIP"] = "None"
    if not_ready:
        spec["publishNotReadyAddresses"] = True
    spec["selector"] = {"app.kubernetes.io/name": owner, "app.kubernetes.io/part-of": deployment}
    spec["ports"] = [{"name": f"p{p}", "port": p, "targetPort": p} for p in ports]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, deployment, owner, ns), "spec": spec}
