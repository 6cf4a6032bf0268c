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
    a = argv(engine, "container")
    assert a[:2] == [engine, "run"]
    joined = shlex.join(a)
    # one container per host for the instance, named and labelled so it can be found again
    assert "--rm --name al-t-a-llama-container-" in joined
    for label in ("ascend-launcher.root=/srv/l/t/a", "ascend-launcher.deployment=t",
                  "ascend-launcher.instance=llama", "ascend-launcher.host=a",
                  "ascend-launcher.program=llama-container", "ascend-launcher.generation=g1"):
        assert ["--label", label] == a[a.index(label) - 1:a.index(label) + 1]
    # the NPUs of the instance's ranks on the host plus the driver's shared devices (seed 003)
    devices = [a[i + 1] for i, x in enumerate(a) if x == "--device"]
    assert devices == ["/dev/davinci0", "/dev/davinci1", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
    # the generation and the runtime at the paths the env names, read-only
    assert "-v /srv/l/t/a/gens/g1:/srv/l/t/a/current:ro" in joined
    assert "-v /srv/l/t/a/runtime/r1:/srv/l/t/a/runtime/current:ro" in joined
    assert "-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro" in joined
    assert "-v /usr/local/Ascend/driver/tools/hccn_tool:/usr/local/bin/hccn_tool:ro" in joined
    assert "-v /data/weights:/data/weights:ro" in joined
    for flag in ("--net=host", "--ipc=host", "--init", "--shm-size=1g", "--ulimit memlock=-1:-1",
                 "--ulimit nofile=65536:65536", "--cpuset-cpus=0-23", "--cpuset-mems=0"):
        assert flag in joined
    # the image, then only what holds the container up: the ranks are exec'd into it
    i = a.index("mindie:2.2.RC1-800I-A2-aarch64")
    assert a[i + 1:i + 3] == ["/bin/sh", "-c"] and "sleep" in a[i + 3]
    assert "--privileged" not in a and "-d" not in a


def test_each_rank_is_exec_d_in_its_instance_s_container_on_the_host():
    spec = spec_of(files_of())
    box = spec["programs"]["container"]
    assert sorted(spec["programs"]) == ["0", "1", "container"]
    for slot in ("0", "1"):
        assert spec["programs"][slot] == {"program": f"llama-r{slot}", "in": "container", "name": box["name"]}
    conf = files_of()["a"]["supervisord.conf"].content.decode()
    # the container is a member of the instance's gang (its group), started before the ranks
    assert "[group:llama]\nprograms=llama-container,llama-r0,llama-r1\n" in conf
    assert "[program:llama-container]\ncommand=/bin/sh /srv/l/t/a/current/bin/llama.sh container\n" in conf
    assert conf.split("[program:llama-container]")[1].split("[program:")[0].count("priority=10") == 1


@pytest.mark.parametrize("framework,devices", [
    ("atb", ["/dev/davinci0", "/dev/davinci1", "/dev/davinci2", "/dev/davinci3"]),
    (None, ["/dev/davinci2", "/dev/davinci3"])])
def test_a_stack_that_selects_its_npu_by_physical_id_gets_every_npu_of_the_server(framework, devices):
    """ATB takes npu:{device_id} from the ranktable; inside a container the runtime numbers what it
    sees from 0, so only a container with all of the server's NPUs keeps physical = logical ids."""
    text = TOPO.format(engine="docker", extra="").replace(
        "devices: {0: 10.9.0.1, 1: 10.9.0.2}", "devices: {0: 10.9.0.1, 1: 10.9.0.2, 2: 10.9.0.3, 3: 10.9.0.4}"
    ).replace("devices: {0: 10.9.1.1, 1: 10.9.1.2}", "devices: {0: 10.9.1.1, 1: 10.9.1.2, 2: 10.9.1.3, 3: 10.9.1.4}"
    ).replace("    hosts: [a, b]\n", "    hosts: [a, b]\n    devices: [2, 3]\n"
              + (f"    framework: {framework}\n" if framework else ""))
    text = text.replace("address: 10.1.0.1\n", "address: 10.1.0.1\n    server_id: 10.1.0.1\n")
    _, files = rendered(compile_text(text).plan)
    spec = spec_of(files)
    box = spec["programs"]["container"]
    assert [d for d in box["devices"] if d[-1].isdigit()] == devices
    assert sorted(spec["programs"]) == ["0", "1", "container"]  # slots are local ranks


def test_a_host_without_the_driver_paths_or_npus_runs_without_them():
    a = argv("podman", "container", exists=lambda path: path == "/dev/davinci1")
    assert [a[i + 1] for i, x in enumerate(a) if x == "--device"] == ["/dev/davinci1"]
    assert not any("/usr/local/Ascend" in x for x in a)
    assert "/data/weights:/data/weights:ro" in a  # the user's own mounts are not optional


def test_docker_and_podman_differ_only_in_the_binary():
    d, p = argv("docker", "container"), argv("podman", "container")
    assert d[1:] == p[1:]


def test_the_in_container_script_is_the_usual_launch_script_and_the_host_runs_the_runner():
    files = files_of()
    runner = files["a"]["bin/llama.sh"].content.decode()
    inside = files["a"]["bin/llama.in.sh"].content.decode()
    env = files["a"]["env/llama.env"].content.decode()
    assert "python3 -m launcher.host.container run /srv/l/t/a" in runner
    assert "exec python3 run.py --x 'a b'" in inside and "cd /work" in inside
    assert "container)" not in env and "0)" in env  # the container's own program has no rank env
    manifest = json.loads(files["a"]["manifest.json"].content)
    names = {p["name"]: p["container"] for p in manifest["programs"]}
    assert names["llama-r0"] == names["llama-r1"] == names["llama-container"]
    assert names["llama-r0"].startswith("al-t-a-llama-container-")
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
    assert spec.target[:3] == ("podman", "exec", "al-t-b-llama-container-" + spec.target[2].rsplit("-", 1)[1])
    assert spec.programs == ("llama-r2", "llama-r3")
    assert spec.target[3:] == ("test", "-e", "/data/weights/ok")
    assert dependency_probes(plan)["web"] == []  # another host cannot exec into b's container


def test_plan_shows_one_container_per_host_and_what_runs_in_it(tmp_path):
    path = write(tmp_path, TOPO.format(engine="podman", extra=HOST_SIDE.replace("container: null", "")))
    table = run_cli("plan", path)
    assert table.code == 0, table.err
    rows = [line.split() for line in table.out.splitlines() if line.startswith(("a ", "b "))]
    assert [r for r in rows if r[2] == "container"] == [
        ["a", "llama", "container", "-", "-", "0,1", "-", "llama-container"],
        ["b", "llama", "container", "-", "-", "0,1", "-", "llama-container"]]
    doc = json.loads(run_cli("plan", "--json", path).out)
    a = {p["name"]: p["container"] for p in doc["hosts"][0]["programs"]}
    assert a == {"side": "side", "llama-container": "llama-container",
                 "llama-r0": "llama-container", "llama-r1": "llama-container"}


def test_an_owner_named_like_an_instances_container_program_is_refused(tmp_path):
    code, err = check(tmp_path, TOPO.format(engine="podman", extra=HOST_SIDE.replace("name: side", "name: llama-container")))
    assert code == 2 and ":24:11: error: services[0].name: 'llama-container' names the per-host container program" in err
