"""`container:`: what a user writes, what validate says at line:col, and the argv each engine gets."""
from __future__ import annotations

import json
import shlex

import pytest

from launcher.core.pipeline import compile_text, rendered
from launcher.host.container import run_argv
from tests.helpers import run_cli, write

TOPO = """\
version: 1
name: t
defaults:
  deploy_dir: /srv/l
  container:
    engine: {engine}
    image: mindie:2.2.RC1-800I-A2-aarch64
    mounts: ["/data/weights:/data/weights:ro"]
    shm_size: 1g
hosts:
  - name: a
    address: 10.1.0.1
    devices: {{0: 10.9.0.1, 1: 10.9.0.2}}
  - name: b
    address: 10.1.0.2
    devices: {{0: 10.9.1.1, 1: 10.9.1.2}}
instances:
  - name: llama
    hosts: [a, b]
    command: [python3, run.py, --x, "a b"]
    cwd: /work
    limits: {{memlock: unlimited, nofile: 65536, numa: {{physcpubind: "0-23", membind: 0}}}}
{extra}
"""

HOST_SIDE = """\
services:
  - name: side
    kind: generic
    hosts: [a]
    command: [sleep, "100"]
    container: null
"""


def files_of(engine: str = "docker", extra: str = "") -> dict:
    _, files = rendered(compile_text(TOPO.format(engine=engine, extra=extra)).plan)
    return files


def spec_of(files: dict, host: str = "a", owner: str = "llama") -> dict:
    return json.loads(files[host][f"containers/{owner}.json"].content)


def argv(engine: str, slot: str = "0", exists=lambda path: True) -> list[str]:
    spec = spec_of(files_of(engine))
    return run_argv(spec, slot, "/srv/l/t/a/gens/g1", "/srv/l/t/a/runtime/r1", exists)


@pytest.mark.parametrize("engine", ["docker", "podman", "/usr/local/bin/isula"])
def test_the_run_argv_is_the_same_for_every_cli_compatible_engine(engine):
    a = argv(engine)
    assert a[:2] == [engine, "run"]
    joined = shlex.join(a)
    # one container per rank, named and labelled so it can be found again
    assert "--rm --name al-t-a-llama-r0-" in joined
    for label in ("ascend-launcher.root=/srv/l/t/a", "ascend-launcher.deployment=t",
                  "ascend-launcher.instance=llama", "ascend-launcher.host=a",
                  "ascend-launcher.program=llama-r0", "ascend-launcher.generation=g1"):
        assert ["--label", label] == a[a.index(label) - 1:a.index(label) + 1]
    # exactly the rank's NPU plus the driver's shared devices (seed 003)
    devices = [a[i + 1] for i, x in enumerate(a) if x == "--device"]
    assert devices == ["/dev/davinci0", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    # the generation and the runtime at the paths the env names, read-only
    assert "-v /srv/l/t/a/gens/g1:/srv/l/t/a/current:ro" in joined
    assert "-v /srv/l/t/a/runtime/r1:/srv/l/t/a/runtime/current:ro" in joined
    assert "-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro" in joined
    assert "-v /usr/local/Ascend/driver/tools/hccn_tool:/usr/local/bin/hccn_tool:ro" in joined
    assert "-v /data/weights:/data/weights:ro" in joined
    for flag in ("--net=host", "--ipc=host", "--init", "--shm-size=1g", "--ulimit memlock=-1:-1",
                 "--ulimit nofile=65536:65536", "--cpuset-cpus=0-23", "--cpuset-mems=0"):
        assert flag in joined
    # the image, then the usual launch script (env file, limits, cwd) inside
    i = a.index("mindie:2.2.RC1-800I-A2-aarch64")
    assert a[i + 1:] == ["/bin/sh", "/srv/l/t/a/current/bin/llama.in.sh", "0"]
    assert "--privileged" not in a and "-d" not in a


def test_a_host_without_the_driver_paths_or_npus_runs_without_them():
    a = argv("podman", "1", exists=lambda path: path == "/dev/davinci1")
    assert [a[i + 1] for i, x in enumerate(a) if x == "--device"] == ["/dev/davinci1"]
    assert not any("/usr/local/Ascend" in x for x in a)
    assert "/data/weights:/data/weights:ro" in a  # the user's own mounts are not optional


def test_docker_and_podman_differ_only_in_the_binary():
    d, p = argv("docker"), argv("podman")
    assert d[1:] == p[1:]


def test_the_in_container_script_is_the_usual_launch_script_and_the_host_runs_the_runner():
    files = files_of()
    runner = files["a"]["bin/llama.sh"].content.decode()
    inside = files["a"]["bin/llama.in.sh"].content.decode()
    assert "python3 -m launcher.host.container run /srv/l/t/a" in runner
    assert "exec python3 run.py --x 'a b'" in inside and "cd /work" in inside
    manifest = json.loads(files["a"]["manifest.json"].content)
    assert manifest["programs"][0]["container"].startswith("al-t-a-llama-r0-")
    assert manifest["programs"][0]["engine"] == "docker"


def test_container_null_runs_on_the_host_and_changing_the_image_restarts_only_that_owner():
    files = files_of(extra=HOST_SIDE)
    assert "containers/side.json" not in files["a"]
    assert b"exec sleep 100" in files["a"]["bin/side.sh"].content
    other = rendered(compile_text(TOPO.format(engine="docker", extra=HOST_SIDE).replace("aarch64", "x86_64")).plan)[1]
    hashes = {p["owner"]: p["owner_hash"] for p in json.loads(files["a"]["manifest.json"].content)["programs"]}
    new = {p["owner"]: p["owner_hash"] for p in json.loads(other["a"]["manifest.json"].content)["programs"]}
    assert hashes["side"] == new["side"] and hashes["llama"] != new["llama"]


def test_an_owner_overrides_defaults_key_by_key():
    extra = """\
services:
  - name: svc
    kind: generic
    hosts: [b]
    command: [etcd]
    container: {image: "quay.io/coreos/etcd:v3.5", network: host, init: false}
"""
    spec = spec_of(files_of(extra=extra), "b", "svc")
    assert spec["image"] == "quay.io/coreos/etcd:v3.5" and spec["engine"] == "docker"
    flags = spec["programs"][""]["flags"]
    assert "--init" not in flags and "--shm-size=1g" in flags  # the rest still from defaults
    assert spec["programs"][""]["devices"] == []  # a service drives no NPU


def check(tmp_path, text: str):
    run = run_cli("validate", write(tmp_path, text))
    return run.code, run.err


def test_no_image_anywhere_is_refused_where_the_container_is(tmp_path):
    text = TOPO.format(engine="podman", extra="").replace("    image: mindie:2.2.RC1-800I-A2-aarch64\n", "")
    code, err = check(tmp_path, text)
    assert code == 2
    assert ":6:5: error: defaults.container: container has no image" in err


@pytest.mark.parametrize("arg", ["-d", "--detach", "--name=x", "--rm", "-it"])
def test_args_that_would_escape_supervision_are_refused_at_their_position(tmp_path, arg):
    extra = f'    container: {{args: ["--pids-limit", "100", "{arg}"]}}\n'
    code, err = check(tmp_path, TOPO.format(engine="podman", extra="").rstrip("\n") + "\n" + extra)
    assert code == 2
    assert f":23:47: error: instances[0].container.args[2]: container.args: {arg.split('=')[0]} is not allowed" in err


def test_keys_are_checked_by_the_schema_with_line_and_column(tmp_path):
    bad = TOPO.format(engine="podman", extra="").replace("shm_size: 1g", "shm_size: lots")
    code, err = check(tmp_path, bad)
    assert code == 2 and ":9:15: error: defaults.container.shm_size" in err
    bad = TOPO.format(engine="podman", extra="").replace("shm_size: 1g", "shm: 1g")
    code, err = check(tmp_path, bad)
    assert code == 2 and "unknown key 'shm'" in err and ":9:5:" in err
    bad = TOPO.format(engine="podman", extra="").replace('mounts: ["/data/weights:/data/weights:ro"]',
                                                        'mounts: ["weights:/data"]')
    code, err = check(tmp_path, bad)
    assert code == 2 and "defaults.container.mounts[0]" in err


def test_a_rank_container_off_the_host_network_is_warned_about(tmp_path):
    code, err = check(tmp_path, TOPO.format(engine="podman", extra="").replace("shm_size: 1g", "network: bridge"))
    assert code == 0 and "warning" in err and "use host" in err


def test_a_command_probe_runs_inside_the_container_and_never_from_another_host():
    from launcher.core.probes import dependency_probes, probe_specs
    extra = """\
    probe: {command: [test, -e, /data/weights/ok]}
services:
  - name: web
    kind: generic
    hosts: [b]
    command: [sleep, "1000"]
    depends_on: [llama]
    container: null
"""
    plan = compile_text(TOPO.format(engine="podman", extra=extra)).plan
    (spec,) = probe_specs(plan, "llama", "b")
    assert spec.kind == "command" and spec.inside
    assert spec.target[:3] == ("podman", "exec", "al-t-b-llama-r2-" + spec.target[2].rsplit("-", 1)[1])
    assert spec.target[3:] == ("test", "-e", "/data/weights/ok")
    assert dependency_probes(plan)["web"] == []  # another host cannot exec into b's container
