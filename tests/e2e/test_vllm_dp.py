"""End to end on the testbed: a 2-host framework: vllm-ascend DP instance forms its world.

vllm-ascend's DP guide without Ray, DP 4 over two nodes: `up` gives each node HCCL_IF_IP = its own
address (set by the framework), the first node the plain argv, the second `--headless
--data-parallel-start-rank 2`; each node's demo rank (--vllm-dp) reads them as `vllm serve` does and
the two meet at the first node's --data-parallel-address:--data-parallel-rpc-port. The hosts name no
`nic:`: `validate` refuses the instance until `launcher discover` has read the interface holding each
host's address (the testbed's veth, eth0 inside the host) into the lock file; then each node gets
GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME and HCCL_SOCKET_IFNAME for it (issue 22 point 2).
"""
from __future__ import annotations


from pathlib import Path

from tests.helpers import health_json, host_entry, cli_on_testbed, run_cli, topology_head, wait_for

TESTBED_HOSTS = 2
HEALTH = 18860


def topology(tb) -> str:
    hosts = "".join(host_entry(tb, h, f"{{0: 10.80.{k}.1, 1: 10.80.{k}.2}}") for k, h in enumerate(tb.hosts))
    return (f"{topology_head('dp')}hosts:\n{hosts}instances:\n"
            "  - name: vl\n    framework: vllm-ascend\n    processes: per_host\n    hosts: [h1, h2]\n"
            "    rendezvous_port: 27489\n"
            f"    command: [launcher-demo-rank, --vllm-dp, --health-port, \"{HEALTH}\", --data-parallel-size, \"4\",\n"
            "              --data-parallel-size-local, \"2\", --data-parallel-address, \"{{ master_addr }}\",\n"
            "              --data-parallel-rpc-port, \"{{ rendezvous_port }}\", --tensor-parallel-size, \"2\"]\n"
            "    worker_args: [--headless, --data-parallel-start-rank, \"{{ host.index * 2 }}\"]\n"
            f"    probe: {{http: \":{HEALTH}/health\", period: 0.2}}\n")




def test_a_two_host_vllm_ascend_dp_instance_forms_its_world(testbed, tmp_path):
    path = tmp_path / "dp.yaml"
    path.write_text(topology(testbed))
    before = run_cli("validate", str(path))
    assert before.code == 2 and "whose interface is not known: run `launcher discover" in before.err, before.err
    for h in testbed.hosts:  # what the testbed made: eth0 holds the host's address
        assert f" {h.address}/" in testbed.run(h.name, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    found = cli_on_testbed(testbed, "discover", str(path))
    lock = Path(str(path).replace(".yaml", ".lock.yaml"))
    assert found.code == 0 and found.out.strip() == f"wrote {lock} (0 device IPs, 2 interfaces)", found.err
    assert "nics:\n  h1: eth0\n  h2: eth0\n" in lock.read_text()
    try:
        run = cli_on_testbed(testbed, "up", str(path))
        assert run.code == 0, run.err
        docs = [wait_for(lambda h=h: health_json(h.address, HEALTH), 30, f"{h.name} /health") for h in testbed.hosts]
        assert [d["vllm"]["dp_ranks"] for d in docs] == [[0, 1], [2, 3]]
        assert [d["vllm"]["serves_api"] for d in docs] == [True, False]
        assert [d["vllm"]["hccl_if_ip"] for d in docs] == [h.address for h in testbed.hosts]
        assert all(d["world_size"] == 2 for d in docs)
        assert [d["vllm"]["socket_ifnames"] for d in docs] == [
            {"GLOO_SOCKET_IFNAME": "eth0", "TP_SOCKET_IFNAME": "eth0", "HCCL_SOCKET_IFNAME": "=eth0"}] * 2
    finally:
        cli_on_testbed(testbed, "down", str(path), "--purge")
