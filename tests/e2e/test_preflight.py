"""The preflight gate on the testbed: launcher-linkcheck built on each host from the shipped
source, run against the fake hccn_tool (the NPU boundary), per-host scenario files.

`launcher check` reports per host and device; `launcher up` refuses to start an instance
whose links are not healthy, on every host, and says why in the checker's own words.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import cli_on_testbed as cli, ROOT, run_cli

TESTBED_HOSTS = 2
DEVICES = (0, 1, 2, 3)


def ip(host_index: int, device: int) -> str:
    return f"10.98.{host_index}.{device + 1}"


@pytest.fixture(scope="module")
def fake_tool():
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and a C compiler to build the fake hccn_tool")
    # Outside /tmp: every testbed host has its own /tmp, but shares the rest of the disk.
    out = Path(tempfile.mkdtemp(prefix="launcher-fake-npu-", dir="/var/tmp"))
    out.chmod(0o755)
    subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "native"), f"OUT={out}"], check=True,
                   capture_output=True, timeout=300)
    yield out / "fake_hccn_tool"
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def npu(testbed, fake_tool):
    """scenario(host_index, **overrides) writes that host's scenario; all hosts start healthy."""
    def scenario(index: int, extra: str = "", tool: bool = True) -> None:
        h = testbed.hosts[index]
        base = Path(h.path("/srv/npu"))
        base.mkdir(mode=0o755, exist_ok=True)
        lines = [f"devices={','.join(map(str, DEVICES))}"] + [f"ip.{d}={ip(index, d)}" for d in DEVICES]
        (base / "scenario").write_text("\n".join(lines) + "\n" + extra)
        wrapper = base / "hccn_tool"
        if tool:
            wrapper.write_text(f"#!/bin/sh\nFAKE_NPU_SCENARIO=/srv/npu/scenario exec {fake_tool} \"$@\"\n")
            wrapper.chmod(0o755)
        elif wrapper.exists():
            wrapper.unlink()
    for i in range(len(testbed.hosts)):
        scenario(i)
    return scenario


@pytest.fixture
def topo(testbed, tmp_path):
    hosts = "".join(
        f"  - name: {h.name}\n    address: {h.address}\n"
        f"    ssh: {{user: {testbed.user}, identity_file: {testbed.identity_file}}}\n"
        f"    devices: {{{', '.join(f'{d}: {ip(i, d)}' for d in DEVICES)}}}\n" for i, h in enumerate(testbed.hosts))
    path = tmp_path / "topo.yaml"
    path.write_text(f"""\
version: 1
name: preflight
defaults:
  deploy_dir: /srv/launcher
  hccn_tool: /srv/npu/hccn_tool
hosts:
{hosts}instances:
  - name: model
    hosts: [{', '.join(h.name for h in testbed.hosts)}]
    command: [sleep, "600"]
""")
    yield str(path)
    cli(testbed, "down", str(path), "--purge")



def test_all_links_good_then_up_starts(testbed, npu, topo):
    run = cli(testbed, "check", topo)
    assert run.code == 0, run.out + run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["HOST", "DEVICE", "LINKS"]
    assert [ln.split() for ln in lines[1:9]] == [[h.name, str(d), "ok"] for h in testbed.hosts for d in DEVICES]
    doc = json.loads(cli(testbed, "check", topo, "--json").out)
    assert doc["ok"] is True
    # 4 devices x (link, optical, ip, tls, 7 pings: every other device of the 8-rank world) on each host
    assert all(len(r["report"]["checks"]) == 4 * 11 for r in doc["checks"].values())
    up = cli(testbed, "up", topo)
    assert up.code == 0, up.err
    assert "preflight: links up for model" in up.err
    rows = json.loads(cli(testbed, "status", topo, "--json").out)
    assert {r["state"] for r in rows} <= {"RUNNING", "STARTING"}


SCENARIOS = {
    "link down on device 3 of host 2": (
        1, "link.3=DOWN\n", 'h2 device 3: link: expected UP, seen DOWN (hccn_tool: "link status: DOWN")'),
    "optical module absent": (
        0, "optical.2=not present\n",
        'h1 device 2: optical: expected present, seen not present (hccn_tool: "present              : not present")'),
    "device IP differs from the topology": (
        1, "ip.0=10.98.1.99\n", 'h2 device 0: ip: expected 10.98.1.1, seen 10.98.1.99 (hccn_tool: "ipaddr:10.98.1.99")'),
    "33.33% ping loss to one peer": (
        0, "ping_loss.1.10.98.1.3=1\n",
        "h1 device 1: ping 10.98.1.3: expected loss <= 0.00%, seen 33.33% "
        '(hccn_tool: "3 packets transmitted, 2 received, 33.33% packet loss")'),
    "hccn_tool hanging": (
        1, "hang.2=link\n", "h2 device 2: link: expected UP, seen timeout after 5.0 s"),
}


def test_tls_switch_differing_across_hosts_refuses_the_world(testbed, npu, topo):
    """Each host's devices agree among themselves; only across the hosts does the switch differ."""
    npu(1, "tls=1\n")
    run = cli(testbed, "check", topo)
    assert run.code == 1
    assert ("TLS switch differs across the devices of instance model (0 on h1 devices 0,1,2,3; 1 on h2 devices "
            "0,1,2,3): HCCL fails with EI0016") in run.out, run.out
    up = cli(testbed, "up", topo)
    assert up.code == 1 and "model NOT started" in up.err and "EI0016" in up.err


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_bad_link_is_reported_and_up_refuses_the_instance(testbed, npu, topo, name):
    index, extra, expected = SCENARIOS[name]
    npu(index, extra)
    run = cli(testbed, "check", topo)
    assert run.code == 1
    assert expected in run.out, run.out
    up = cli(testbed, "up", topo)
    assert up.code == 1
    assert "model NOT started: its HCCL links are not healthy:" in up.err
    assert expected in up.err
    rows = json.loads(cli(testbed, "status", topo, "--json").out)
    assert rows and not any(r["state"] in ("RUNNING", "STARTING") for r in rows)  # on no host


def test_hccn_tool_missing(testbed, npu, topo):
    npu(1, tool=False)
    run = cli(testbed, "check", topo)
    assert run.code == 1
    assert "h2: link check could not run:" in run.out
    assert "hccn_tool" in run.out
    up = cli(testbed, "up", topo)
    assert up.code == 1 and "model NOT started" in up.err


def test_skip_preflight_says_so_loudly(testbed, npu, topo):
    npu(1, "link.3=DOWN\n")
    up = cli(testbed, "up", topo, "--skip-preflight")
    assert up.code == 0, up.err
    assert "PREFLIGHT SKIPPED: HCCL links of model were NOT checked (--skip-preflight)" in up.err


def test_discover_writes_the_lock_file_once(testbed, npu, topo):
    text = Path(topo).read_text()
    Path(topo).write_text(text.replace("1: 10.98.1.2", "1: discover"))
    before = run_cli("validate", topo)
    assert before.code == 2 and "IP is left to discovery" in before.err

    run = cli(testbed, "discover", topo)
    assert run.code == 0, run.err
    lock = Path(topo).with_name("topo.lock.yaml")
    assert run.out.strip() == f"wrote {lock} (1 device IPs, 2 interfaces)"
    assert "h2:\n    1: 10.98.1.2\n" in lock.read_text()
    assert "nics:\n  h1: eth0\n  h2: eth0\n" in lock.read_text()  # the testbed's veth holds each address
    assert run_cli("validate", topo).code == 0
    plan = json.loads(run_cli("plan", topo, "--json").out)
    assert [r["device_ip"] for r in plan["instances"][0]["ranks"] if r["host"] == "h2" and r["device_id"] == 1] \
        == ["10.98.1.2"]

    stamp = lock.stat().st_mtime_ns
    again = cli(testbed, "discover", topo)
    assert again.code == 0 and again.out.startswith("unchanged:")
    assert lock.stat().st_mtime_ns == stamp  # nothing rewritten

    npu(1, "ip.1=10.98.1.77\n")
    moved = cli(testbed, "discover", topo)
    assert moved.code == 0 and moved.out.startswith("wrote")
    assert "1: 10.98.1.77" in lock.read_text()


def test_dcmi_is_used_where_the_driver_library_loads(testbed, npu, topo, fake_tool):
    """The fake libdcmi.so on each host reads the scenario beside it: DCMI answers the IP
    check and adds a network-health check; hccn_tool still does link, optical and ping."""
    for i, h in enumerate(testbed.hosts):
        shutil.copy(fake_tool.parent / "libdcmi.so", Path(h.path("/srv/npu")) / "libdcmi.so")
    Path(topo).write_text(Path(topo).read_text().replace(
        "  hccn_tool: /srv/npu/hccn_tool\n", "  hccn_tool: /srv/npu/hccn_tool\n  dcmi_lib: /srv/npu/libdcmi.so\n"))
    doc = json.loads(cli(testbed, "check", topo, "--json").out)
    assert doc["ok"] is True, doc["failures"]
    checks = [c for r in doc["checks"].values() for c in r["report"]["checks"]]
    assert {c["source"] for c in checks if c["check"] in ("ip", "net_health")} == {"dcmi"}
    assert len([c for c in checks if c["check"] == "net_health"]) == 8
    npu(1, "dcmi_ip.0=10.98.1.99\nnet_health.3=3\n")
    run = cli(testbed, "check", topo)
    assert run.code == 1
    assert "h2 device 0: ip: expected 10.98.1.1, seen 10.98.1.99 (dcmi: " in run.out
    assert "h2 device 3: net_health: expected Success or Init, seen Unreachable (3) (dcmi: " in run.out
    up = cli(testbed, "up", topo)
    assert up.code == 1 and "model NOT started" in up.err
