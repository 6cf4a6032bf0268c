"""`launcher export kubernetes`: every example config exports to its golden directory or is refused
with errors naming the keys Kubernetes cannot express; the export is deterministic and each pod runs
the env and argv `launcher render` gives its host, its addresses filled in at run time.

To accept an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit/core/test_kube_export.py,
then review `git diff tests/golden/kubernetes`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from launcher.core.errors import SpecErrors
from launcher.core.kube.objects import Options
from launcher.core.pipeline import compile_text
from launcher.core.kube.export import export_kubernetes
from tests.helpers import CONFIGS, ROOT
from tests.kube_export import export

GOLDEN = ROOT / "tests" / "golden" / "kubernetes"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))
EXPORTED = [CONFIGS / f"k8s-{name}.yaml"
            for name in ("a3-two-superpods", "mindie-service", "vllm-ascend-ray", "vllm-dp-2node", "vllm-pd", "yuanrong")]
# each refused config: a key its errors must name (each error names its own)
REFUSED = {
    "a3-pd-datadist": "llm_datadist",
    "a3-superpod-2x16": "instances[0].processes",
    "a3-two-superpods": "instances[0].container",
    "demo-local": "instances[0].processes",
    "llm-datadist-link": "instances[0].probe.log",
    "mindie-atb-2x4": "instances[0].container",
    "mindie-atb-2x8": "instances[0].processes",
    "mindie-atb-2x8-container": "instances[0].processes",
    "mindie-service-2node": "instances[0].container",
    "pd-1p1d-tp2": "pd_groups[0]",
    "pd-2p2d-multihost": "pd_groups[0]",
    "vllm-ascend-dp-2node": "instances[0].container",
    "vllm-ascend-pd-mooncake": "services[0].command[7]",
    "vllm-ascend-ray-2node": "instances[0].restart_with",
    "yuanrong-rh2d": "services[1].remote_h2d_devices",
    "yuanrong-rh2d-container": "services[1].limits.numa",
}


def test_every_config_exports_or_is_refused():
    assert {c.stem for c in EXPORTED} | set(REFUSED) == {c.stem for c in CONFIG_FILES}
    assert not {c.stem for c in EXPORTED} & set(REFUSED)
    assert {p.name for p in GOLDEN.iterdir() if p.is_dir()} == {c.stem for c in EXPORTED}


@pytest.mark.parametrize("config", EXPORTED, ids=lambda p: p.stem)
def test_config_exports_to_golden_files(config: Path):
    got = export(config)
    expected_dir = GOLDEN / config.stem
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        expected_dir.mkdir(parents=True)
        for path, content in got.items():
            (expected_dir / path).write_bytes(content)
    expected = {p.name: p.read_bytes() for p in expected_dir.iterdir()}
    assert sorted(got) == sorted(expected)
    for path, content in expected.items():
        assert got[path] == content, f"kubernetes/{config.stem}/{path} differs from the golden file"
    assert export(config) == got  # deterministic


@pytest.mark.parametrize("config", [c for c in CONFIG_FILES if c.stem in REFUSED], ids=lambda p: p.stem)
def test_config_is_refused_naming_the_key(config: Path):
    with pytest.raises(SpecErrors) as exc:
        export(config)
    errors = exc.value.errors
    assert REFUSED[config.stem] in {e.path for e in errors}
    for e in errors:
        assert e.loc is not None and e.loc.file == str(config) and e.loc.line > 0, e
        assert e.message.startswith("not expressible on Kubernetes: "), e


BASE = """
version: 1
name: demo
defaults:
  container: {image: "registry.example/serve:1"}
  env: {HCCL_IF_IP: "{{ host.address }}"}
hosts:
  - {name: a, address: 10.1.0.1, devices: {0: 10.2.0.1, 1: 10.2.0.2}}
  - {name: b, address: 10.1.0.2, devices: {0: 10.2.0.3, 1: 10.2.0.4}}
  - {name: c, address: 10.1.0.3, devices: {0: 10.2.0.5, 1: 10.2.0.6}}
instances:
  - name: serve
    hosts: [a, b, c]
    processes: per_host
    command: [serve, --peers, "{{ instance.hosts }}", --head, "{{ master_addr }}:{{ rendezvous_port }}"]
    worker_args: [--start, "{{ host.index * 2 }}"]
"""


def launch_scripts(files: dict[str, bytes]) -> dict[str, str]:
    return {k: yaml.safe_load(v)["data"]["launch.sh"] for k, v in files.items() if k.endswith("-launch.configmap.yaml")}


def run_launch(script: str, index: int, addresses: list[str], tmp: Path) -> tuple[list[str], dict[str, str]]:
    """Run pod `index`'s launch script, its `exec` made to print the argv; (argv, env it exports)."""
    pod_env = tmp / "pod.env"
    pod_env.write_text("".join(f"LAUNCHER_ADDR_{j}={a}\n" for j, a in enumerate(addresses)))
    body = script.replace("/run/ascend-launcher/pod.env", str(pod_env)).replace("exec ", "printf '%s\\n' ")
    out = subprocess.run(["sh", "-c", body + "\necho --env--\nenv\n"],
                         env={"LWS_WORKER_INDEX": str(index), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    argv, _, env = out.partition("--env--\n")
    return argv.splitlines(), dict(line.split("=", 1) for line in env.splitlines() if "=" in line)


def test_a_pod_runs_its_hosts_env_and_argv_with_the_addresses_it_learns(tmp_path: Path):
    files = export_kubernetes(compile_text(BASE, "topo.yaml"))
    script = launch_scripts(files)["demo-serve-launch.configmap.yaml"]
    addrs = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
    argv, env = run_launch(script, 2, addrs, tmp_path)
    assert argv == ["serve", "--peers", ",".join(addrs), "--head", "192.0.2.10:29500", "--start", "4"]
    assert env["HCCL_IF_IP"] == "192.0.2.12" and env["MASTER_ADDR"] == "192.0.2.10"
    assert env["LAUNCHER_HOST_ADDRESS"] == "192.0.2.12" and env["RANK_ID_START"] == "4"
    assert env["RANKTABLEFILE"] == env["RANK_TABLE_FILE"] == "/run/ascend-launcher/ranktables/serve.json"
    assert "10.1.0." not in script  # no address of the topology's hosts reaches a pod


def test_a_literal_host_address_is_refused_at_its_key():
    text = BASE.replace('--head, "{{ master_addr }}:', '--head, "10.1.0.1:')
    with pytest.raises(SpecErrors) as exc:
        export_kubernetes(compile_text(text, "topo.yaml"))
    (e,) = exc.value.errors
    assert e.path == "instances[0].command[4]" and "names host a's address literally" in e.message
    assert str(e.loc) == "topo.yaml:15:63"


PD = BASE.replace("""  - name: serve
    hosts: [a, b, c]""", """  - name: prefill
    role: prefill
    hosts: [a]
    processes: per_host
    command: [serve]
  - name: serve
    role: decode
    hosts: [b, c]""").replace("  - {name: b, address: 10.1.0.2,", "  - {name: b, nic: eth0, address: 10.1.0.2,").replace(
    "  - {name: c, address: 10.1.0.3,", "  - {name: c, nic: eth0, address: 10.1.0.3,") + """pd_groups:
  - {name: pd, scheduler: a, prefill: [prefill], decode: [serve]}
"""


def test_a_table_spanning_groups_is_refused_saying_why_it_would_go_stale():
    """A PD global table names every group's pods; LWS recreates one group alone on new pods, so the
    others' tables would name pods that are gone: refused with that reason, where vllm-ascend's
    PD group (no global table) exports."""
    with pytest.raises(SpecErrors) as exc:
        export_kubernetes(compile_text(PD, "topo.yaml"))
    (e,) = exc.value.errors
    assert e.path == "pd_groups[0]"
    assert "recreates a failed group alone, on new pods with new addresses" in e.message
    assert "stale table" in e.message and "keep this deployment on the SSH path" in e.message
    vllm = PD.replace("    role: prefill\n", "    role: prefill\n    framework: vllm-ascend\n").replace(
        "    role: decode\n", "    role: decode\n    framework: vllm-ascend\n")
    files = export_kubernetes(compile_text(vllm, "topo.yaml"))
    assert "demo-pd.disaggregatedset.yaml" in files


def test_a_probe_on_the_first_host_only_is_the_leader_pods_alone():
    text = BASE.replace("    worker_args:", "    probe: {http: ':8000/health', on: first_host}\n    worker_args:")
    lws = yaml.safe_load(export_kubernetes(compile_text(text, "topo.yaml"))["demo-serve.leaderworkerset.yaml"])
    lwt = lws["spec"]["leaderWorkerTemplate"]
    leader, = lwt["leaderTemplate"]["spec"]["containers"]
    worker, = lwt["workerTemplate"]["spec"]["containers"]
    assert leader["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert "readinessProbe" not in worker
    assert {k: v for k, v in leader.items() if k != "readinessProbe"} == worker  # otherwise the same pod
    every = yaml.safe_load(export_kubernetes(compile_text(text.replace(", on: first_host", ""), "topo.yaml"))[
        "demo-serve.leaderworkerset.yaml"])["spec"]["leaderWorkerTemplate"]
    assert "leaderTemplate" not in every and "readinessProbe" in every["workerTemplate"]["spec"]["containers"][0]
    # a service is a StatefulSet: one template for all its pods
    svc = text + """services:
  - {name: proxy, kind: generic, hosts: [a, b], command: [proxy], ports: [9000],
     probe: {tcp: 9000, on: first_host}}
"""
    with pytest.raises(SpecErrors) as exc:
        export_kubernetes(compile_text(svc, "topo.yaml"))
    (e,) = exc.value.errors
    assert e.path == "services[0].probe.on" and "one template" in e.message


def test_a_one_member_etcd_is_a_statefulset_with_its_service(tmp_path: Path):
    text = BASE + """
services:
  - {name: etcd, kind: etcd, hosts: [a], client_port: 2379, peer_port: 2380,
     container: {image: "quay.io/coreos/etcd:v3.5.17", driver_mounts: false}}
"""
    files = export_kubernetes(compile_text(text.replace("    worker_args", "    depends_on: [etcd]\n    worker_args"),
                                           "topo.yaml"), Options(volcano=True))
    sts = yaml.safe_load(files["demo-etcd.statefulset.yaml"])
    svc = yaml.safe_load(files["demo-etcd.service.yaml"])
    assert sts["spec"]["replicas"] == 1 and sts["spec"]["serviceName"] == "demo-etcd"
    assert [p["port"] for p in svc["spec"]["ports"]] == [2379, 2380]
    assert sts["spec"]["template"]["spec"]["schedulerName"] == "volcano"
    script = launch_scripts(files)["demo-etcd-launch.configmap.yaml"]
    assert '--advertise-client-urls http://"${LAUNCHER_POD_IP}":2379' in script
    assert "--data-dir /run/ascend-launcher/data/etcd " in script  # the deployment root is the pod's emptyDir
    lws = yaml.safe_load(files["demo-serve.leaderworkerset.yaml"])
    init = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["initContainers"][0]
    assert init["command"][-2:] == ["--wait", "tcp://demo-etcd:2379"]



def printing_exec(script: str) -> str:
    """The launch script with its own `exec` lines printing their argv, NUL-separated, instead: not
    an `exec` inside a quoted argument (a `sh -c` program's own lines)."""
    out, quoted = [], False
    for line in script.splitlines(keepends=True):
        if not quoted and line.lstrip().startswith("exec "):
            line = line.replace("exec ", "printf '%s\\0' ", 1)
        if quoted or not line.lstrip().startswith("#"):  # a comment's apostrophe quotes nothing
            quoted ^= line.replace("\"'\"", "").count("'") % 2 == 1  # sh_quote writes a ' as '"'"'
        out.append(line)
    return "".join(out)


@pytest.mark.parametrize("config", EXPORTED, ids=lambda p: p.stem)
def test_each_pod_runs_what_render_gives_its_host(config: Path, tmp_path: Path):
    # with the topology's own addresses for the pods', every launch script runs exactly the argv and
    # env `launcher render` gives that host (paths under the generation are the pod's emptyDir)
    from launcher.deploy.files import compile_file
    result = compile_file(str(config))
    files = export_kubernetes(result)
    topo, plan = result.topology, result.plan
    by_host = {hp.host.name: hp for hp in plan.hosts}
    pd = {n for g in topo.pd_groups for n in g.prefill + g.decode}
    owners = [(i.name, i.hosts, "LWS_WORKER_INDEX") for i in topo.instances] + \
        [(s.name, s.hosts, "LAUNCHER_POD_INDEX") for s in topo.services]
    for owner, hosts, index_var in owners:
        script = launch_scripts(files)[f"{topo.name}-{owner}-launch.configmap.yaml"]
        addrs = [by_host[h].host.address for h in hosts]
        for j, h in enumerate(hosts):
            program = next(p for p in by_host[h].programs if p.owner == owner and p.kind in ("rank", "service"))
            root = by_host[h].root

            def pod(v: str) -> str:
                return v.replace(f"{root}/current/", "/run/ascend-launcher/").replace(root, "/run/ascend-launcher")
            # not this machine's business: the image's directories, the pod's limits
            body = script.replace("  cd ", "  true ").replace("  ulimit ", "  true ")
            pod_env = tmp_path / "pod.env"
            pod_env.write_text("".join(f"LAUNCHER_ADDR_{k}={a}\n" for k, a in enumerate(addrs)))
            body = printing_exec(body.replace("/run/ascend-launcher/pod.env", str(pod_env)))
            out = subprocess.run(["sh", "-c", body + "\necho --env--\nenv -0\n"],
                                 env={index_var: str(j), "LAUNCHER_POD_IP": addrs[j]},
                                 capture_output=True, text=True, check=True).stdout
            argv_text, _, env_text = out.partition("--env--\n")
            argv = argv_text.split("\0")[:-1]
            env = dict(kv.split("=", 1) for kv in env_text.split("\0") if "=" in kv)
            want_argv = [pod(a) for a in program.argv]
            svc = topo.service(owner)
            if svc is not None and svc.kind == "datasystem":  # it reaches its etcd by the etcd's Service
                etcd = topo.service(svc.spec.etcd)
                want_argv[want_argv.index("--etcd_address") + 1] = f"{topo.name}-{etcd.name}:{etcd.spec.client_port}"
            assert argv == want_argv, (owner, h)
            want = {k: pod(v) for k, v in program.env if not (owner in pd and k == "GLOBAL_RANK_TABLE_FILE_PATH")}
            inst = topo.instance(owner)
            if inst is not None and inst.framework == "mindie-service":
                # MindIE finds its server by MIES_CONTAINER_IP (the pod's address: the table's container_ip)
                # and reads the config.json of its ConfigMap, render's but for ServerConfig.ipAddress
                want.update(MIES_CONTAINER_IP=addrs[j], MIES_CONFIG_JSON_PATH="/etc/ascend-launcher-mindie/config.json")
                mounted = json.loads(yaml.safe_load(files[f"{topo.name}-{owner}-mindie.configmap.yaml"])["data"]["config.json"])
                own = json.loads(next(f.content for f in by_host[h].files if f.path == f"mindie/{owner}/config.json"))
                assert own["ServerConfig"]["ipAddress"] == addrs[j]  # over SSH the file names the server
                own["ServerConfig"]["ipAddress"] = mounted["ServerConfig"]["ipAddress"]
                assert mounted == own, (owner, h)
            assert {k: env.get(k) for k in want} == want, (owner, h)
            assert set(env) - set(want) <= {"PWD", "SHLVL", "_", index_var, "LAUNCHER_POD_IP"}, (owner, h)


ETCD3 = BASE + """
services:
  - {name: etcd, kind: etcd, hosts: [a, b, c], client_port: 2379, peer_port: 2380,
     container: {image: "quay.io/coreos/etcd:v3.5.17", driver_mounts: false}}
"""


def test_an_etcd_cluster_names_its_members_by_their_pods_stable_names(tmp_path: Path):
    import kubernetes_validate
    from tests.kube_export import KUBERNETES
    files = export_kubernetes(compile_text(ETCD3, "topo.yaml"))
    sts = yaml.safe_load(files["demo-etcd.statefulset.yaml"])
    svc = yaml.safe_load(files["demo-etcd.service.yaml"])
    for doc in (sts, svc):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert sts["spec"]["replicas"] == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    # the members resolve each other before any is ready: they only become ready together
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    names = [f"demo-etcd-{j}.demo-etcd" for j in range(3)]  # <pod>.<headless service>: StatefulSet DNS
    assert [env[f"LAUNCHER_PEER_{j}"] for j in range(3)] == names
    script = launch_scripts(files)["demo-etcd-launch.configmap.yaml"]
    clusters = set()
    for j in range(3):
        out = subprocess.run(["sh", "-c", script.replace("exec ", "printf '%s\\n' ")],
                             env={"LAUNCHER_POD_INDEX": str(j), **{f"LAUNCHER_PEER_{k}": n for k, n in enumerate(names)}},
                             capture_output=True, text=True, check=True).stdout.splitlines()
        flag = {out[i]: out[i + 1] for i in range(1, len(out) - 1, 2) if out[i].startswith("--")}
        assert flag["--name"] == f"etcd-{'abc'[j]}"
        assert flag["--initial-advertise-peer-urls"] == f"http://{names[j]}:2380"
        assert flag["--advertise-client-urls"] == f"http://{names[j]}:2379"
        assert flag["--listen-peer-urls"] == "http://0.0.0.0:2380"  # etcd binds IPs, not names
        clusters.add(flag["--initial-cluster"])
    # the same string on every member: etcd derives each member's id from its peer URLs
    assert clusters == {",".join(f"etcd-{h}=http://{n}:2380" for h, n in zip("abc", names))}
    assert "10.1.0." not in script
