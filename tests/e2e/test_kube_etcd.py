"""An etcd cluster as `launcher export kubernetes` writes it, formed for real on the namespace testbed.

Each testbed host plays one pod of the etcd StatefulSet: it runs the exported launch script (the
ConfigMap's `launch.sh`) with the environment the StatefulSet gives a pod (its index, its IP, every
member's stable name in LAUNCHER_PEER_<j>), under the real etcd (Debian etcd-server). The pods'
stable DNS names (`<sts>-<j>.<service>`) are the cluster's to resolve; here the hosts' names stand
in for them (each host's /etc/hosts has them), so the members reach each other by name, as in a
cluster, and the test checks what the export decides: the same member URLs on every member, the
listeners bound to what etcd can bind.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from launcher.core.kube.export import export_kubernetes
from launcher.core.kube.podenv import POD_DIR
from launcher.core.pipeline import compile_text
from tests.helpers import wait_for

TESTBED_HOSTS = 3
CLIENT, PEER = 23790, 23800


def topology(tb) -> str:
    hosts = "".join(f"  - {{name: {h.name}, address: {h.address}, devices: {{0: 10.97.{i}.1}}}}\n"
                    for i, h in enumerate(tb.hosts))
    return (f"version: 1\nname: kv\nhosts:\n{hosts}services:\n"
            f"  - {{name: etcd, kind: etcd, hosts: [{', '.join(h.name for h in tb.hosts)}], client_port: {CLIENT},"
            f" peer_port: {PEER}, container: {{image: 'quay.io/coreos/etcd:v3.5.17', driver_mounts: false}}}}\n")


def etcdctl(tb, *args: str) -> subprocess.CompletedProcess:
    endpoints = ",".join(f"http://{h.address}:{CLIENT}" for h in tb.hosts)
    return subprocess.run(["etcdctl", "--endpoints", endpoints, "--dial-timeout", "2s", *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def members(testbed):
    if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
        pytest.skip("needs etcd and etcdctl (apt-get install etcd-server etcd-client)")
    files = export_kubernetes(compile_text(topology(testbed), "kv.yaml"))
    script = yaml.safe_load(files["kv-etcd-launch.configmap.yaml"])["data"]["launch.sh"]
    sts = yaml.safe_load(files["kv-etcd.statefulset.yaml"])
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    procs = []
    for j, h in enumerate(testbed.hosts):
        base = h.path("/srv/kv")
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(mode=0o755)
        (base / "launch.sh").write_text(script.replace(POD_DIR, "/srv/kv/pod"))
        # the StatefulSet's env for pod j, its stable names standing as the hosts' names
        pod_env = {**env, "PATH": "/usr/bin:/bin", "LAUNCHER_POD_INDEX": str(j), "LAUNCHER_POD_IP": h.address,
                   **{f"LAUNCHER_PEER_{k}": x.name for k, x in enumerate(testbed.hosts)}}
        log = open(base / "etcd.log", "w")
        procs.append(subprocess.Popen(["nsenter", "-t", str(h.sshd_pid), "-m", "-n", "-u", "--wd=/", "--",
                                       "/bin/sh", "/srv/kv/launch.sh"], env=pod_env, stdout=log, stderr=log))
        log.close()
    yield env, procs
    for p in procs:  # by the pid we started (sh execs etcd)
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
    for h in testbed.hosts:
        shutil.rmtree(h.path("/srv/kv"), ignore_errors=True)


def test_the_exported_etcd_forms_one_cluster_of_its_members(testbed, members):
    env, procs = members
    assert sorted(k for k in env if k.startswith("LAUNCHER_PEER_")) == [f"LAUNCHER_PEER_{j}" for j in range(3)]

    def healthy() -> bool:
        return etcdctl(testbed, "endpoint", "health").returncode == 0
    try:
        wait_for(healthy, timeout=60, what="all 3 members healthy")
    except AssertionError as err:  # with what each member said
        raise AssertionError(f"{err}\n" + "\n".join(h.path("/srv/kv/etcd.log").read_text()[-1500:]
                                                     for h in testbed.hosts)) from None
    listed = json.loads(etcdctl(testbed, "member", "list", "-w", "json").stdout)["members"]
    assert sorted((m["name"], m["peerURLs"]) for m in listed) == \
        [(f"etcd-{h.name}", [f"http://{h.name}:{PEER}"]) for h in testbed.hosts]
    assert all(p.poll() is None for p in procs)
    put = etcdctl(testbed, "put", "/kv/probe", "one-cluster")
    assert put.returncode == 0, put.stderr
    for h in testbed.hosts:  # each member answers from the one cluster's data
        got = subprocess.run(["etcdctl", "--endpoints", f"http://{h.address}:{CLIENT}", "get", "/kv/probe",
                              "--print-value-only"], capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() == "one-cluster", (h.name, got.stderr)
