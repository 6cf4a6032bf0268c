"""framework: vllm-ascend: the per-node rules of vllm-ascend's multi-node guides, refused at line:col.

From the guides (reference §7.2, issue 14): each node sets HCCL_IF_IP to its own IP (never loopback,
vllm-ascend #2399); DP without Ray: node 0 `--data-parallel-size S --data-parallel-size-local L
--data-parallel-address <node0> --data-parallel-rpc-port P`, every other node the same plus
`--headless --data-parallel-start-rank <L x index>`, S = L x nodes; Ray: `vllm serve` on the head
only; Mooncake PD: kv_port >= 20000 + 1000 x NPUs per node, engine_id unique.
"""
from __future__ import annotations

import pytest

from launcher.core.pipeline import rendered
from tests.helpers import compile_checked as compile_, line_of, spec_errors as errors

HOSTS = """\
version: 1
name: t
hosts:
  - name: a
    address: 10.1.0.1
    nic: eth0
    devices: {0: 10.9.0.1, 1: 10.9.0.2, 2: 10.9.0.3, 3: 10.9.0.4, 4: 10.9.0.5, 5: 10.9.0.6, 6: 10.9.0.7, 7: 10.9.0.8}
  - name: b
    address: 10.1.0.2
    nic: eth0
    devices: {0: 10.9.1.1, 1: 10.9.1.2, 2: 10.9.1.3, 3: 10.9.1.4, 4: 10.9.1.5, 5: 10.9.1.6, 6: 10.9.1.7, 7: 10.9.1.8}
instances:
"""
DP = ('[vllm, serve, /w, --data-parallel-size, "4", --data-parallel-size-local, "2", '
      '--data-parallel-address, "{{ master_addr }}", --data-parallel-rpc-port, "13389"]')
WORKER = '[--headless, --data-parallel-start-rank, "{{ host.index * 2 }}"]'


def dp(command: str = DP, worker: str | None = WORKER, leader: str | None = None, extra: str = "") -> str:
    text = (HOSTS + "  - name: m\n    framework: vllm-ascend\n    processes: per_host\n    hosts: [a, b]\n"
            f"    command: {command}\n")
    if worker is not None:
        text += f"    worker_args: {worker}\n"
    if leader is not None:
        text += f"    leader_args: {leader}\n"
    return text + extra








def test_the_guides_layout_passes_and_each_node_gets_its_own_hccl_if_ip():
    result = compile_(dp())
    _, files = rendered(result.plan)
    for hp in result.plan.hosts:
        env = files[hp.host.name]["env/m.env"].content.decode()
        assert f"export HCCL_IF_IP={hp.host.address}\n" in env


def test_one_process_per_node():
    text = dp().replace("processes: per_host", "processes: per_device")
    assert any(e.startswith(f"F:{line_of(text, 'processes:')}:") and "set processes: per_host" in e
               for e in errors(text))


@pytest.mark.parametrize("value, message", [
    ("10.1.0.1", "HCCL_IF_IP is 10.1.0.1 on both a and b"),
    ("127.0.0.1", "HCCL_IF_IP '127.0.0.1' is not a non-loopback IP"),
    ("eth0", "HCCL_IF_IP 'eth0' is not a non-loopback IP"),
])
def test_hccl_if_ip_must_be_each_nodes_own(value, message):
    text = dp(extra=f"    env: {{HCCL_IF_IP: {value}}}\n")
    errs = errors(text)
    assert any(e.startswith(f"F:{line_of(text, 'HCCL_IF_IP')}:") and message in e for e in errs), errs
    compile_(dp(extra="    env: {HCCL_IF_IP: \"{{ host.address }}\"}\n"))


def test_headless_missing_on_a_worker_is_refused_at_the_command():
    text = dp(worker=None)
    errs = errors(text)
    assert any(e.startswith(f"F:{line_of(text, 'command:')}:") and "--headless belongs on every node but the first"
               in e for e in errs), errs
    assert any("--data-parallel-start-rank 0 should be 2" in e for e in errs), errs


def test_headless_on_the_leader_is_refused():
    text = dp(worker=None, command=DP[:-1] + ", --headless]")
    assert any("on a: --headless belongs on every node but the first" in e for e in errors(text))


def test_a_wrong_start_rank_is_refused_at_worker_args():
    text = dp(worker='[--headless, --data-parallel-start-rank, "{{ host.index * 4 }}"]')
    errs = errors(text)
    assert any(e.startswith(f"F:{line_of(text, 'worker_args')}:") and "--data-parallel-start-rank 4 should be 2" in e
               for e in errs), errs


def test_dp_size_must_be_nodes_times_local_size_and_address_the_first_node():
    text = dp(command=DP.replace('"4"', '"8"').replace("{{ master_addr }}", "{{ host.address }}"))
    errs = errors(text)
    assert any("--data-parallel-size 8 is not 2 nodes x --data-parallel-size-local 2" in e for e in errs), errs
    assert any("on b: --data-parallel-address '10.1.0.2' is not the first node's address 10.1.0.1" in e
               for e in errs), errs


def test_ray_serve_runs_on_the_head_only():
    text = dp(command="[vllm, serve, /w, --distributed-executor-backend, ray]", worker=None)
    assert any("with Ray, `vllm serve` runs on the head only" in e for e in errors(text))


def mooncake(role: str, port: str, engine: str) -> str:
    cfg = ('{"kv_connector": "MooncakeConnectorV1", "kv_role": "%s", "kv_port": "%s", "engine_id": "%s"}'
           % (role, port, engine))
    return f"[vllm, serve, /w, --kv-transfer-config, '{cfg}']"


def pd(p_port: str = "30000", d_port: str = "30100", p_engine: str = "0", d_engine: str = "1") -> str:
    return (HOSTS + "  - name: p\n    framework: vllm-ascend\n    processes: per_host\n    hosts: [a]\n"
            f"    command: {mooncake('kv_producer', p_port, p_engine)}\n"
            "  - name: d\n    framework: vllm-ascend\n    processes: per_host\n    hosts: [b]\n"
            f"    command: {mooncake('kv_consumer', d_port, d_engine)}\n")


def test_mooncake_kv_port_below_the_transports_range_is_refused():
    compile_(pd(p_port="28000"))  # 20000 + 1000 x 8 NPUs
    text = pd(p_port="27999")
    errs = errors(text)
    assert any(e.startswith(f"F:{line_of(text, 'kv_producer')}:") and "kv_port 27999 must be at least 28000" in e
               for e in errs), errs


def test_mooncake_engine_ids_are_unique():
    text = pd(d_engine="0")
    assert any("engine_id '0' is also instance p's" in e for e in errors(text))


def test_a_kv_transfer_config_that_is_not_json_is_refused():
    text = pd().replace('"kv_connector"', "kv_connector", 1)
    assert any("--kv-transfer-config is not JSON" in e for e in errors(text))


def test_the_pd_mooncake_config_is_refused_with_a_low_kv_port_or_a_shared_engine_id(tmp_path):
    from tests.helpers import CONFIGS, run_cli, write
    text = (CONFIGS / "vllm-ascend-pd-mooncake.yaml").read_text()
    assert run_cli("validate", str(CONFIGS / "vllm-ascend-pd-mooncake.yaml")).code == 0
    low = write(tmp_path, text.replace('"kv_port": "30000"', '"kv_port": "27999"', 1), "low.yaml")
    run = run_cli("validate", low)
    assert run.code == 2 and "instance prefill on node0: kv_port 27999 must be at least 28000" in run.err
    same = write(tmp_path, text.replace('"engine_id": "decode-0"', '"engine_id": "prefill-0"'), "same.yaml")
    run = run_cli("validate", same)
    assert run.code == 2 and "engine_id 'prefill-0' is also instance prefill's" in run.err


def test_the_ray_config_starts_serve_on_the_head_after_every_worker_joined():
    from launcher.deploy.files import compile_file
    from tests.helpers import CONFIGS
    result = compile_file(str(CONFIGS / "vllm-ascend-ray-2node.yaml"))
    topo = result.topology
    head, worker = topo.service("ray-head"), topo.service("ray-worker")
    serve = topo.instance("qwen")
    assert head is not None and worker is not None and serve is not None
    assert "ray-head" in worker.depends_on and head.probe is not None
    assert "ray-worker" in serve.depends_on and worker.probe is not None
    assert serve.hosts == head.hosts  # vllm serve on the head only
    levels = [set(level) for level in result.plan.levels]
    order = {name: k for k, level in enumerate(levels) for name in level}
    assert order["ray-head"] < order["ray-worker"] < order["qwen"]
    for hp in result.plan.hosts:
        for p in hp.programs:
            env = dict(p.env)
            if p.owner.startswith("ray-"):  # set before `ray start`, as the guide says
                assert env["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
                assert env["ASCEND_RT_VISIBLE_DEVICES"]
                assert p.argv[p.argv.index("--node-ip-address") + 1] == hp.host.address
            assert env["HCCL_IF_IP"] == hp.host.address


def test_no_ranktable_variable_unless_the_topology_asks_for_it():
    """torch_npu takes a valid RANK_TABLE_FILE as the switch to ranktable init (reference §7.4): a
    vllm-ascend node gets neither name; `RANK_TABLE_FILE: "{{ ranktable }}"` asks for the table."""
    plain = [dict(p.env) for hp in compile_(dp()).plan.hosts for p in hp.programs]
    assert len(plain) == 2
    assert all("RANK_TABLE_FILE" not in env and "RANKTABLEFILE" not in env for env in plain)
    asked = compile_(dp(extra='    env: {RANK_TABLE_FILE: "{{ ranktable }}"}\n')).plan
    for hp in asked.hosts:
        env = dict(hp.programs[0].env)
        assert env["RANK_TABLE_FILE"].startswith(hp.root + "/current/")
        assert env["RANK_TABLE_FILE"].endswith(".json") and "RANKTABLEFILE" not in env


def test_a_ranktable_variable_stays_the_launchers_for_other_stacks():
    text = dp().replace("framework: vllm-ascend", "framework: atb") + "    env: {RANK_TABLE_FILE: /t.json}\n"
    line = line_of(text, "RANK_TABLE_FILE")
    assert any(f"F:{line}:" in e and "RANK_TABLE_FILE is set per rank by the launcher; remove it" in e
               for e in errors(text)), errors(text)
