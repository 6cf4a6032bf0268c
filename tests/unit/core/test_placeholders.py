"""Per-host placeholders ({{ host.address }} ...) in argv and env: filled per host, refused at line:col."""
from __future__ import annotations

import shlex

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.pipeline import compile_text, rendered
from launcher.core.placeholders import HOST_NAMES, INSTANCE_NAMES, fill, problems
from tests.helpers import CONFIGS

EVERY = {**HOST_NAMES, **INSTANCE_NAMES}


def test_fill_names_products_and_literals():
    values = {"host.address": "10.0.0.2", "host.index": 3}
    assert fill("--ip={{ host.address }}", values) == "--ip=10.0.0.2"
    assert fill("{{host.index*2}}", values) == "6"
    assert fill("{{ '{{' }}x{{ \"}}\" }}", values) == "{{x}}"
    assert fill('{"kv_port": "36000", "a": {"b": 1}}', values) == '{"kv_port": "36000", "a": {"b": 1}}'


@pytest.mark.parametrize("text, message", [
    ("{{ host.adress }}", "unknown placeholder {{ host.adress }}"),
    ("{{ rank }}", "per-rank values are in the environment (RANK, LOCAL_RANK, DEVICE_ID)"),
    ("--x={{ host.address", "'{{' is not closed by '}}'"),
    ("{{ host.address + 1 }}", "cannot read the placeholder"),
    ("{{ host.name * 2 }}", "{{ host.name }} is not a number"),
])
def test_problems_say_what_is_wrong(text, message):
    (bad,) = problems(text, EVERY)
    assert message in bad.message


def _topology(instance_extra: str = "", defaults_env: str = "", services: str = "") -> str:
    return f"""version: 1
name: ph
defaults:
  env: {{A: "1"{defaults_env}}}
hosts:
  - {{name: n0, address: 10.1.0.10, devices: {{0: 10.2.0.1, 1: 10.2.0.2}}}}
  - {{name: n1, address: 10.1.0.11, devices: {{0: 10.2.1.1, 1: 10.2.1.2}}}}
instances:
  - name: m
    hosts: [n0, n1]
    rendezvous_port: 29600
    command: [serve, --ip, "{{{{ host.address }}}}", --master, "{{{{ master_addr }}}}:{{{{ rendezvous_port }}}}"]
{instance_extra}{services}"""


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as err:
        compile_text(text, "t.yaml")
    return [str(d) for d in err.value.diagnostics]


def test_an_unknown_placeholder_is_an_error_at_its_line_and_column():
    text = _topology(instance_extra='    env: {X: "{{ host.nmae }}"}\n')
    (msg,) = _errors(text)
    assert msg.startswith("t.yaml:13:14: error: instances[0].env.X: unknown placeholder {{ host.nmae }}")


def test_defaults_env_and_services_know_host_values_only():
    errs = _errors(_topology(defaults_env=', B: "{{ world_size }}"'))
    assert len(errs) == 1 and "defaults.env.B: unknown placeholder {{ world_size }}" in errs[0]
    svc = ('services:\n  - {name: s, kind: generic, hosts: [n0, n1], '
           'command: [x, "{{ host.index }}", "{{ master_addr }}"]}\n')
    errs = _errors(_topology(services=svc))
    assert len(errs) == 1 and "services[0].command[2]: unknown placeholder {{ master_addr }}" in errs[0]


def test_braces_where_nothing_fills_them_are_an_error():
    errs = _errors(_topology(instance_extra='    cwd: "/srv/{{ host.name }}"\n'))
    assert len(errs) == 1 and "instances[0].cwd: '{{' here is not filled" in errs[0]


def _argv(files, host: str, owner: str) -> list[str]:
    script = files[host][f"bin/{owner}.sh"].content.decode()
    return shlex.split(script.rstrip().splitlines()[-1])[1:]  # the exec line


def _env(files, host: str, owner: str) -> dict[str, str]:
    lines = files[host][f"env/{owner}.env"].content.decode().splitlines()
    return {k: shlex.split(v)[0] for k, v in (ln[len("export "):].split("=", 1) for ln in lines
                                               if ln.startswith("export "))}


def test_each_host_gets_its_own_values_and_the_leader_worker_split():
    text = _topology(instance_extra="    leader_args: [--head]\n"
                                    "    worker_args: [--headless, --start, \"{{ host.index * 2 }}\"]\n"
                                    '    env: {IF_IP: "{{ host.address }}", DEVS: "{{ host.devices }}"}\n',
                     defaults_env=', NODE: "{{ host.name }}"')
    _, files = rendered(compile_text(text, "t.yaml").plan)
    assert _argv(files, "n0", "m") == ["serve", "--ip", "10.1.0.10", "--master", "10.1.0.10:29600", "--head"]
    assert _argv(files, "n1", "m") == ["serve", "--ip", "10.1.0.11", "--master", "10.1.0.10:29600",
                                       "--headless", "--start", "2"]
    for host, address in (("n0", "10.1.0.10"), ("n1", "10.1.0.11")):
        env = _env(files, host, "m")
        assert env["IF_IP"] == address and env["NODE"] == host and env["DEVS"] == "0,1"


def test_the_vllm_ascend_dp_config_meets_the_guides_per_node_rules():
    """vllm-ascend's multi-node DP guide: node 0 serves; every other node adds --headless and
    --data-parallel-start-rank (the local DP sizes before it); all point at node 0's address and
    RPC port; each node's HCCL_IF_IP is its own, never loopback."""
    result = compile_text((CONFIGS / "vllm-ascend-dp-2node.yaml").read_text(), "vllm-ascend-dp-2node.yaml")
    _, files = rendered(result.plan)
    hosts = result.topology.hosts
    local_dp = None
    for index, host in enumerate(hosts):
        argv = _argv(files, host.name, "deepseek")
        opt = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
        local_dp = int(opt["--data-parallel-size-local"])
        assert opt["--data-parallel-address"] == hosts[0].address
        assert opt["--data-parallel-rpc-port"] == "13389"
        assert ("--headless" in argv) == (index > 0)
        assert opt.get("--data-parallel-start-rank") == (None if index == 0 else str(index * local_dp))
        env = _env(files, host.name, "deepseek")
        assert env["HCCL_IF_IP"] == host.address and not env["HCCL_IF_IP"].startswith("127.")
        assert env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert local_dp * len(hosts) == 4  # --data-parallel-size
