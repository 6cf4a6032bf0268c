"""`launcher discover` on an Atlas A3 host (local transport, the fakes as hccn_tool and npu-smi):
vnic IPs, SDIDs and the Super Pod ID land in the lock file, and the topology then renders v1.2."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def fakes(tmp_path_factory) -> Path:
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("no C compiler or make here")
    out = tmp_path_factory.mktemp("fakes")
    made = subprocess.run(["make", "-C", str(ROOT / "tests" / "native"), f"OUT={out}"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    return out


def setup(tmp_path: Path, fakes: Path, monkeypatch, extra: str = "") -> Path:
    scenario = tmp_path / "scenario"
    scenario.write_text("devices=0,1,2,3\nvnic_ip.0=192.168.2.10\nvnic_ip.1=192.168.2.11\nvnic_ip.2=192.168.2.12\n"
                        "sdid.0=104857600\nsdid.1=104857601\nsdid.2=104857602\nsuper_pod_id=3\n" + extra)
    monkeypatch.setenv("FAKE_NPU_SCENARIO", str(scenario))
    monkeypatch.setenv("LAUNCHER_NPU_SMI", str(fakes / "fake_npu_smi"))
    path = tmp_path / "topo.yaml"
    path.write_text(f"""\
version: 1
name: a3disc
defaults: {{deploy_dir: {tmp_path / 'deploy'}}}
hosts:
  - name: solo
    address: 127.0.0.1
    transport: local
    hccn_tool: {fakes / 'fake_hccn_tool'}
    super_pod_id: discover
    devices:
      0: discover
      1: discover
      2: {{ip: 192.168.2.12, super_device_id: discover}}
instances:
  - {{name: m, hosts: [solo], command: [sleep, "1"]}}
""")
    return path


def test_discover_fills_vnic_ips_sdids_and_the_pod(tmp_path, fakes, monkeypatch):
    path = setup(tmp_path, fakes, monkeypatch)
    before = run_cli("validate", str(path))
    assert before.code == 2 and "super_pod_id is left to discovery" in before.err
    run = run_cli("discover", str(path))
    assert run.code == 0, run.err
    lock = tmp_path / "topo.lock.yaml"
    assert run.out.strip() == f"wrote {lock} (2 device IPs, 3 SDIDs, 1 SuperPoD ids, 1 interfaces)"
    body = lock.read_text().split("version: 1", 1)[1]
    assert body == ("\ndevices:\n  solo:\n    0: 192.168.2.10\n    1: 192.168.2.11\n"
                    "super_pods:\n  solo: '3'\nsuper_device_ids:\n  solo:\n    0: 104857600\n    1: 104857601\n"
                    "    2: 104857602\nnics:\n  solo: lo\n")  # the interface holding 127.0.0.1
    table = json.loads(run_cli("ranktable", str(path), "--instance", "m").out)
    assert table["version"] == "1.2" and table["super_pod_list"][0]["super_pod_id"] == "3"
    assert [d["super_device_id"] for d in table["server_list"][0]["device"]] == ["104857600", "104857601",
                                                                                  "104857602"]
    again = run_cli("discover", str(path))
    assert again.code == 0 and again.out.startswith("unchanged:")


def test_unreadable_spod_info_leaves_the_lock_file_alone(tmp_path, fakes, monkeypatch):
    garbage = tmp_path / "garbage"
    garbage.write_text("npu-smi: command not supported\n")
    path = setup(tmp_path, fakes, monkeypatch, f"raw_spod-info.1={garbage}\n")
    run = run_cli("discover", str(path))
    assert run.code == 1
    assert 'solo device 1: could not be read: SuperPoD facts: no "SDID :" line in the output' in run.err
    assert not (tmp_path / "topo.lock.yaml").exists()


def test_dies_of_one_server_in_two_pods(tmp_path, fakes, monkeypatch):
    path = setup(tmp_path, fakes, monkeypatch, "super_pod_id.2=4\n")
    run = run_cli("discover", str(path))
    assert run.code == 1 and "solo: could not be read: its dies report different Super Pod IDs ['3', '4']" in run.err


def test_discover_reads_a_dies_nic_ip_and_a_roce_world_carries_it(tmp_path, fakes, monkeypatch):
    """`nic_ip: discover` is read with `hccn_tool -i N -ip -g` (the NIC, not the vnic) into the lock
    file; an instance that runs HCCL over RoCE (HCCL_INTER_HCCS_DISABLE=TRUE) gets it as device_ip."""
    path = setup(tmp_path, fakes, monkeypatch, "ip.2=10.40.2.12\n")
    text = path.read_text().replace("2: {ip: 192.168.2.12, super_device_id: discover}",
                                    "2: {ip: 192.168.2.12, nic_ip: discover, super_device_id: discover}")
    path.write_text(text.replace("{name: m, hosts: [solo], command: [sleep, \"1\"]}",
                                 "{name: m, hosts: [solo], devices: [2], command: [sleep, \"1\"], "
                                 "env: {HCCL_INTER_HCCS_DISABLE: 'TRUE'}}"))
    before = run_cli("validate", str(path))
    assert before.code == 2 and "host solo device 2: nic_ip is left to discovery" in before.err
    run = run_cli("discover", str(path))
    assert run.code == 0, run.err
    assert "1 NIC IPs" in run.out
    lock = (tmp_path / "topo.lock.yaml").read_text()
    assert "nic_ips:\n  solo:\n    2: 10.40.2.12\n" in lock
    table = json.loads(run_cli("ranktable", str(path), "--instance", "m").out)
    assert [d["device_ip"] for d in table["server_list"][0]["device"]] == ["10.40.2.12"]


def test_a_die_without_a_nic_ip_is_named_and_the_lock_file_left_alone(tmp_path, fakes, monkeypatch):
    path = setup(tmp_path, fakes, monkeypatch)  # the scenario gives device 2 no `ip.2`
    path.write_text(path.read_text().replace("2: {ip: 192.168.2.12, super_device_id: discover}",
                                             "2: {ip: 192.168.2.12, nic_ip: discover, super_device_id: discover}"))
    run = run_cli("discover", str(path))
    assert run.code == 1 and "solo device 2: IP could not be read: the RoCE NIC's (hccn_tool -i 2 -ip -g): no \"ipaddr:\" line" in run.err, run.err
    assert not (tmp_path / "topo.lock.yaml").exists()
