"""The ranktable rendezvous of a LeaderWorkerSet group, for real, on the namespace testbed.

Each testbed host plays one pod of the group: it runs the init container's own command line, as
`launcher export kubernetes` writes it, from the runtime zip `up` ships (host side plus the core's
ranktable code), with the environment LWS and the export give a pod (LWS_WORKER_INDEX,
LWS_GROUP_SIZE, LWS_LEADER_ADDRESS a name, the pod's IP and name, the key), and the stand-in
hccn_tool with its host's device IPs. The group writes the table `launcher render` gives for the
same servers and devices, byte for byte; a pod killed mid-rendezvous, or one that never comes,
fails the group naming it; the group started again forms it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from launcher.core.kube.export import export_kubernetes
from launcher.core.kube.objects import RUNTIME_ZIP
from launcher.core.kube.podenv import POD_DIR
from launcher.core.pipeline import compile_text, rendered
from launcher.deploy.runtime import build_runtime
from tests.helpers import ROOT, wait_for

TESTBED_HOSTS = 3
DEVICES = (0, 1)
KEY = "k8s-rendezvous-test-key-0123456789abcdef"
SITE = "/srv/rdzv/site.zip"
PODDIR = "/srv/pod"


def device_ip(index: int, device: int) -> str:
    return f"10.97.{index}.{device + 1}"


def nic_ip(index: int, device: int) -> str:
    """An Atlas A3 die's RoCE NIC IP (its `ip` is the vnic's)."""
    return f"10.98.{index}.{device + 1}"


@pytest.fixture(scope="module")
def fake_tool():
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler to build the fake hccn_tool")
    out = Path(tempfile.mkdtemp(prefix="launcher-fake-npu-", dir="/var/tmp"))  # outside the hosts' private /tmp
    out.chmod(0o755)
    subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "native"), f"OUT={out}"], check=True,
                   capture_output=True, timeout=300)
    yield out / "fake_hccn_tool"
    shutil.rmtree(out, ignore_errors=True)


def topology(testbed) -> str:
    hosts = "".join(
        f"  - {{name: {h.name}, address: {h.address}, devices: {{"
        + ", ".join(f"{d}: {device_ip(i, d)}" for d in DEVICES) + "}}\n"
        for i, h in enumerate(testbed.hosts))
    names = ", ".join(h.name for h in testbed.hosts)
    return (f"version: 1\nname: rdzv\ndefaults:\n  container: {{image: 'serve:1'}}\nhosts:\n{hosts}"
            f"instances:\n  - {{name: serve, hosts: [{names}], processes: per_host, command: [serve]}}\n")


@pytest.fixture(scope="module")
def group(testbed, fake_tool):
    """(init container argv as exported, the table `launcher render` writes) with each host set up
    as a pod: the runtime zip, the stand-in hccn_tool and its scenario."""
    text = topology(testbed)
    result = compile_text(text, "rdzv.yaml")
    _, files = rendered(result.plan)
    expected = files[testbed.hosts[0].name]["ranktables/serve.json"].content
    lws = yaml.safe_load(export_kubernetes(result)["rdzv-serve.leaderworkerset.yaml"])
    init = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["initContainers"][0]
    assert init["name"] == "rendezvous"
    site = build_runtime().zip
    for i, h in enumerate(testbed.hosts):
        base = Path(h.path("/srv/rdzv"))
        base.mkdir(mode=0o755, exist_ok=True)
        (base / "site.zip").write_bytes(site)
        lines = [f"devices={','.join(map(str, DEVICES))}"] + [f"ip.{d}={device_ip(i, d)}" for d in DEVICES]
        (base / "scenario").write_text("\n".join(lines) + "\n")
        tool = base / "hccn_tool"
        tool.write_text(f"#!/bin/sh\nFAKE_NPU_SCENARIO=/srv/rdzv/scenario exec {fake_tool} \"$@\"\n")
        tool.chmod(0o755)
    # the pod's paths as the testbed's hosts have them (/run is shared by all of them, /srv is not)
    argv = [a.replace(RUNTIME_ZIP, SITE).replace(POD_DIR, PODDIR) for a in init["command"]]
    return argv + ["--hccn-tool", "/srv/rdzv/hccn_tool"], expected


class Pods:
    """The group's pods as processes in the testbed's hosts; every one is waited for."""

    def __init__(self, testbed, argv: list[str]) -> None:
        self.tb, self.argv, self.procs = testbed, argv, {}
        for h in testbed.hosts:
            shutil.rmtree(h.path(PODDIR), ignore_errors=True)

    def start(self, j: int, *extra: str) -> subprocess.Popen:
        h = self.tb.hosts[j]
        env = {"PATH": "/usr/bin:/bin", "LWS_WORKER_INDEX": str(j), "LWS_GROUP_SIZE": str(len(self.tb.hosts)),
               "LWS_LEADER_ADDRESS": self.tb.hosts[0].name,  # a name, as LWS gives it (the hosts' /etc/hosts)
               "LAUNCHER_POD_IP": h.address, "LAUNCHER_POD_NAME": "rdzv-serve-0" + (f"-{j}" if j else ""),
               "LAUNCHER_RENDEZVOUS_KEY": KEY}
        log = open(h.path("/srv/rdzv") / f"pod{j}.log", "w")
        # nsenter execs the command (no pid namespace): the Popen's pid is the pod's process
        proc = subprocess.Popen(["nsenter", "-t", str(h.sshd_pid), "-m", "-n", "-u", "--wd=/", "--",
                                 "/usr/bin/python3", *self.argv[1:], *extra], env=env, stdout=log, stderr=log)
        log.close()
        self.procs[j] = proc
        return proc

    def log(self, j: int) -> str:
        return (self.tb.hosts[j].path("/srv/rdzv") / f"pod{j}.log").read_text()

    def wait(self, j: int) -> int:
        return self.procs[j].wait(timeout=120)

    def table(self, j: int) -> Path:
        return self.tb.hosts[j].path(PODDIR) / "ranktables" / "serve.json"

    def assert_gone(self) -> None:
        """No pod's process runs on, and the leader's host listens on no rendezvous port (ps, ss)."""
        for p in self.procs.values():
            assert p.poll() is not None and not Path(f"/proc/{p.pid}").exists()
        port = self.argv[self.argv.index("--port") + 1]
        listening = self.tb.run(self.tb.hosts[0], ["ss", "-ltnH", f"sport = :{port}"]).stdout
        assert listening.strip() == "", listening

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture
def pods(testbed, group):
    p = Pods(testbed, group[0])
    yield p
    p.stop_all()


def assert_formed(pods: Pods, testbed, expected: bytes) -> None:
    for j in range(len(testbed.hosts)):
        assert pods.wait(j) == 0, pods.log(j)
        assert pods.table(j).read_bytes() == expected, j
        assert (pods.table(j).stat().st_mode & 0o777) == 0o640
        env = (testbed.hosts[j].path(PODDIR) / "pod.env").read_text()
        assert env == "".join(f"LAUNCHER_ADDR_{k}='{h.address}'\n" for k, h in enumerate(testbed.hosts))
    pods.assert_gone()


def form_all(testbed, argv: list[str], expected: bytes) -> None:
    """Every pod of a group started with ``argv``: the table they form is ``expected``."""
    pods = Pods(testbed, argv)
    try:
        for j in range(len(testbed.hosts)):
            pods.start(j)
        assert_formed(pods, testbed, expected)
    finally:
        pods.stop_all()


def test_the_group_forms_the_table_launcher_render_writes(testbed, group, pods):
    argv, expected = group
    assert b'"device_ip": "10.97.2.2"' in expected and testbed.hosts[2].address.encode() in expected
    for j in (2, 1, 0):  # workers first: they wait for the leader to listen
        pods.start(j)
    assert_formed(pods, testbed, expected)
    assert "reported 2 NPUs" in pods.log(0)


def test_a_pod_killed_mid_rendezvous_fails_the_group_naming_it_and_a_restart_forms_it(testbed, group, pods):
    _, expected = group
    pods.start(0)
    pods.start(1)  # worker 2 not yet: the table cannot be formed
    wait_for(lambda: "worker 1" in pods.log(0) and "reported" in pods.log(0), 60, "worker 1's report")
    os.kill(pods.procs[1].pid, signal.SIGKILL)
    assert pods.wait(1) == -signal.SIGKILL
    assert pods.wait(0) == 1
    assert ("rendezvous failed: rdzv-serve-0-1 (worker 1, " + testbed.hosts[1].address
            + ") left the rendezvous before the group's table was formed") in pods.log(0)
    assert not pods.table(0).exists()
    pods.assert_gone()
    for j in range(len(testbed.hosts)):  # LWS recreates the group: every pod anew
        pods.start(j)
    assert_formed(pods, testbed, expected)


def test_a_pod_that_never_reports_fails_the_group_naming_it(testbed, group, pods):
    pods.start(0, "--timeout", "5")
    pods.start(1)
    assert pods.wait(0) == 1
    assert "rendezvous failed: pod rdzv-serve-0-2 (worker 2) never reported its devices within 5 s" in pods.log(0)
    assert pods.wait(1) == 1  # the worker waiting for the table is told, and fails too
    assert "the leader failed the group: pod rdzv-serve-0-2 (worker 2) never reported" in pods.log(1)
    assert not pods.table(1).exists()
    pods.assert_gone()


def test_a_report_signed_with_another_key_is_refused(testbed, group, pods):
    pods.start(0, "--timeout", "5")
    pods.start(1)
    h = testbed.hosts[2]  # an impostor for worker 2: the group's names, another key
    env = {"PATH": "/usr/bin:/bin", "LWS_WORKER_INDEX": "2", "LWS_GROUP_SIZE": "3",
           "LWS_LEADER_ADDRESS": testbed.hosts[0].name, "LAUNCHER_POD_IP": h.address,
           "LAUNCHER_RENDEZVOUS_KEY": "another-key"}
    proc = subprocess.run(["nsenter", "-t", str(h.sshd_pid), "-m", "-n", "-u", "--wd=/", "--", "/usr/bin/python3",
                           *pods.argv[1:], "--timeout", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert pods.wait(0) == 1
    assert "refused a report: bad signature" in pods.log(0)
    assert "never reported" in pods.log(0)


PODS_OF = (0, 0, 1)  # Super Pod of each testbed host, in worker order


def a3_topology(testbed) -> str:
    hosts = ""
    for i, h in enumerate(testbed.hosts):
        devs = ", ".join(f"{d}: {{ip: {device_ip(i, d)}, nic_ip: {nic_ip(i, d)}, super_device_id: "
                         f"{104857600 + 16 * i + d}}}" for d in DEVICES)
        hosts += f"  - {{name: {h.name}, address: {h.address}, super_pod_id: {PODS_OF[i]}, devices: {{{devs}}}}}\n"
    names = ", ".join(h.name for h in testbed.hosts)
    return (f"version: 1\nname: rdzv\ndefaults:\n  container: {{image: 'serve:1'}}\nhosts:\n{hosts}"
            f"instances:\n  - {{name: serve, hosts: [{names}], processes: per_host, command: [serve]}}\n")


def test_a_superpod_group_forms_the_v1_2_table_launcher_render_writes(testbed, fake_tool, group):
    result = compile_text(a3_topology(testbed), "rdzv-a3.yaml")
    _, files = rendered(result.plan)
    expected = files[testbed.hosts[0].name]["ranktables/serve.json"].content
    assert b'"version": "1.2"' in expected and b'"super_pod_id": "1"' in expected
    assert nic_ip(2, DEVICES[0]).encode() in expected  # across SuperPoDs: the dies' RoCE NIC IPs
    lws = yaml.safe_load(export_kubernetes(result)["rdzv-serve.leaderworkerset.yaml"])
    init = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["initContainers"][0]
    assert "--superpod" in init["command"]
    for i, h in enumerate(testbed.hosts):  # the dies' vnic and NIC IPs, SDIDs and pod as the A3 tools print them
        base = Path(h.path("/srv/rdzv"))
        lines = [f"devices={','.join(map(str, DEVICES))}", f"super_pod_id={PODS_OF[i]}"]
        lines += [f"vnic_ip.{d}={device_ip(i, d)}\nip.{d}={nic_ip(i, d)}\nsdid.{d}={104857600 + 16 * i + d}"
                  for d in DEVICES]
        (base / "scenario-a3").write_text("\n".join(lines) + "\n")
        for tool, fake in (("hccn_tool-a3", fake_tool), ("npu-smi-a3", fake_tool.parent / "fake_npu_smi")):
            (base / tool).write_text(f"#!/bin/sh\nFAKE_NPU_SCENARIO=/srv/rdzv/scenario-a3 exec {fake} \"$@\"\n")
            (base / tool).chmod(0o755)
    argv = [a.replace(RUNTIME_ZIP, SITE).replace(POD_DIR, PODDIR) for a in init["command"]]
    form_all(testbed, argv + ["--hccn-tool", "/srv/rdzv/hccn_tool-a3", "--npu-smi", "/srv/rdzv/npu-smi-a3"], expected)


def test_a_mindie_group_forms_the_table_render_writes_with_each_servers_container_ip(testbed, group):
    # MindIE Service: the same servers and devices, the table with every server's container_ip (the
    # pod's address, MIES_CONTAINER_IP on Kubernetes; the host's own address on bare metal over SSH)
    base = b'{"BackendConfig": {"multiNodesInferEnabled": false}, "ServerConfig": {"ipAddress": "127.0.0.1"}}'
    text = topology(testbed).replace(
        "processes: per_host, command: [serve]}",
        "framework: mindie-service, mindie: {config: mindie.json, port: 1120}, processes: per_host, "
        "command: [serve]}")
    result = compile_text(text, "rdzv-mindie.yaml", inputs={"mindie.json": base})
    _, files = rendered(result.plan)
    expected = files[testbed.hosts[0].name]["ranktables/serve.json"].content
    assert f'"container_ip": "{testbed.hosts[2].address}"'.encode() in expected
    lws = yaml.safe_load(export_kubernetes(result)["rdzv-serve.leaderworkerset.yaml"])
    init = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["initContainers"][0]
    assert init["command"][init["command"].index("--format") + 1] == "mindie"
    argv = [a.replace(RUNTIME_ZIP, SITE).replace(POD_DIR, PODDIR) for a in init["command"]]
    form_all(testbed, argv + ["--hccn-tool", "/srv/rdzv/hccn_tool"], expected)
