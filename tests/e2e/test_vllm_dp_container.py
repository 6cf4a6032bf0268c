"""A 2-host framework: vllm-ascend DP instance in podman containers, one per node, on NPUs 2 and 3.

Each node's container holds /dev/davinci2 and /dev/davinci3 only, which the runtime inside numbers
0 and 1: the launcher's ASCEND_RT_VISIBLE_DEVICES says "0,1" (on the host it would say "2,3"), and
the demo rank in --vllm-dp mode, exec'd into the container, takes its first device from it as
`vllm serve` does. The two nodes meet at the first node's --data-parallel-address.
"""
from __future__ import annotations


from tests.containers import container_defaults
from tests.e2e.test_mindie_container import in_its_container
from tests.helpers import cli_on_testbed, health_json, topology_head, wait_for

TESTBED_HOSTS = 2
HEALTH = 18870


def topology(tb, image: str) -> str:
    container = container_defaults(tb, image)
    hosts = "".join(f"  - name: {h.name}\n    address: {h.address}\n    nic: eth0\n"  # the testbed's veth
                    f"    ssh: {{user: root, identity_file: {tb.identity_file}}}\n"
                    f"    devices: {{{', '.join(f'{d}: 10.81.{k}.{d + 1}' for d in range(4))}}}\n"
                    for k, h in enumerate(tb.hosts))
    return (f"{topology_head(f'mc{tb.id}', extra_defaults=container)}hosts:\n{hosts}instances:\n"
            f"  - name: vl\n    framework: vllm-ascend\n    processes: per_host\n    devices: [2, 3]\n"
            f"    hosts: [{', '.join(h.name for h in tb.hosts)}]\n    rendezvous_port: 27499\n"
            f"    command: [launcher-demo-rank, --vllm-dp, --health-port, \"{HEALTH}\", --data-parallel-size, \"4\",\n"
            "              --data-parallel-size-local, \"2\", --data-parallel-address, \"{{ master_addr }}\",\n"
            "              --data-parallel-rpc-port, \"{{ rendezvous_port }}\", --tensor-parallel-size, \"2\"]\n"
            "    worker_args: [--headless, --data-parallel-start-rank, \"{{ host.index * 2 }}\"]\n"
            f"    probe: {{http: \":{HEALTH}/health\", period: 0.2}}\n")


def test_a_two_host_vllm_dp_instance_in_containers_sees_its_npus_from_0(container_testbed, test_image, tmp_path):
    tb = container_testbed
    path = tmp_path / "dp.yaml"
    path.write_text(topology(tb, test_image))
    try:
        run = cli_on_testbed(tb, "up", str(path))
        assert run.code == 0, run.err
        docs = [wait_for(lambda h=h: health_json(h.address, HEALTH), 60, f"{h.name} /health") for h in tb.hosts]
        assert [d["vllm"]["dp_ranks"] for d in docs] == [[0, 1], [2, 3]]
        assert [d["vllm"]["hccl_if_ip"] for d in docs] == [h.address for h in tb.hosts]
        assert [d["device_id"] for d in docs] == [0, 0]  # davinci2, as the runtime in the container calls it
        assert all(in_its_container(tb, h) for h in tb.hosts)
    finally:
        cli_on_testbed(tb, "down", str(path), "--purge")
