"""launcher-linkcheck on Atlas A3 (spec "superpod": true) and the TLS switch, against the fakes.

A3 per device: vnic (hccn_tool -i N -vnic -g: link status), ip (the vnic's ipaddr), spod
(npu-smi info -t spod-info -i card -c chip: SDID and Super Pod ID), then -hccs_ping to every
peer instead of -ping (vLLM-Ascend's A3 multi-node preflight). "tls": true adds each device's
TLS switch (hccn_tool -i N -tls -g), read here and compared across the world by the launcher.
"""
import json

from tests.native.test_linkcheck import binary, build, checks_of, run, run_json  # noqa: F401 (fixtures)

VNIC = {0: "192.168.2.10", 1: "192.168.2.11", 2: "192.168.2.12", 3: "192.168.2.13"}
PEERS = ["192.168.3.10", "192.168.3.11"]


def scenario(**overrides) -> str:
    lines = {"devices": "0,1,2,3", **{f"vnic_ip.{d}": ip for d, ip in VNIC.items()}}
    lines.update({k.replace("__", "."): str(v) for k, v in overrides.items()})
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def spec(devices=None, peers=PEERS, **extra) -> str:
    devs = devices or [{"id": d, "ip": ip} for d, ip in VNIC.items()]
    return json.dumps({"host": "a3", "superpod": True, "tls": True, "devices": devs, "peers": peers,
                       "timeout": 2, **extra})


def a3_env(binary, tmp_path):
    return {"LAUNCHER_NPU_SMI": str(binary.tool.parent / "fake_npu_smi")}


def check(binary, tmp_path, text=None, spec_text=None, env=None):
    return run_json(binary, ["--spec", "-"], tmp_path, scenario=text or scenario(),
                    stdin=spec_text or spec(), env={**a3_env(binary, tmp_path), **(env or {})})


def test_a3_healthy_world_runs_the_a3_checks_in_order(binary, tmp_path):
    log = tmp_path / "calls"
    proc, report = check(binary, tmp_path, scenario(log=log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [c["check"] for c in checks_of(report, device=3)] == ["vnic", "ip", "spod", "tls", "hccs_ping",
                                                                 "hccs_ping"]
    assert {c["check"] for c in report["checks"]} == {"vnic", "ip", "spod", "tls", "hccs_ping"}
    ip = checks_of(report, "ip", 1)[0]
    assert ip["seen"] == "192.168.2.11" and ip["evidence"] == 'hccn_tool: "vnic ipaddr: 192.168.2.11"'
    spod = checks_of(report, "spod", 3)[0]
    assert spod["seen"] == "SDID 104857603, Super Pod ID 0" and spod["source"] == "npu-smi"
    calls = log.read_text().splitlines()
    # die 3 is card 1, chip 1 (two dies per card); hccs_ping, never -ping, on A3
    assert "npu-smi info -t spod-info -i 1 -c 1" in calls
    assert "-i 0 -hccs_ping -g address 192.168.3.10" in calls
    assert not [c for c in calls if " -ping " in c or " -ip " in c or " -link " in c]


def test_hccs_ping_loss(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(**{"hccs_ping_loss.2.192.168.3.11": 1}))
    assert proc.returncode == 1
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [(c["device"], c["check"], c["peer"], c["seen"]) for c in bad] == [
        (2, "hccs_ping", "192.168.3.11", "33.33%")]


def test_vnic_down(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(vnic_link__1="DOWN"))
    assert proc.returncode == 1
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [(c["device"], c["check"], c["seen"], c["evidence"]) for c in bad] == [
        (1, "vnic", "DOWN", 'hccn_tool: "vnic link status: DOWN"')]


def test_vnic_ip_differs_from_the_table(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(vnic_ip__0="192.168.9.9"))
    assert proc.returncode == 1
    assert [(c["device"], c["check"], c["expected"], c["seen"]) for c in report["checks"] if not c["ok"]] == [
        (0, "ip", "192.168.2.10", "192.168.9.9")]


def test_tls_switch_is_read_per_device(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(tls__2=1))
    assert proc.returncode == 0  # a mismatch is the launcher's finding, across hosts
    assert [c["seen"] for c in checks_of(report, "tls")] == ["0", "0", "1", "0"]


def test_tls_on_a2_too(binary, tmp_path):
    text = "devices=0\nip.0=10.0.0.1\ntls.0=1\n"
    proc, report = run_json(binary, ["--spec", "-"], tmp_path, scenario=text,
                            stdin=json.dumps({"devices": [{"id": 0, "ip": "10.0.0.1"}], "tls": True}))
    assert proc.returncode == 0, proc.stdout
    assert [(c["check"], c["seen"]) for c in report["checks"]] == [("link", "UP"), ("optical", "present"),
                                                                   ("ip", "10.0.0.1"), ("tls", "1")]


def test_unreadable_tls_fails(binary, tmp_path):
    raw = tmp_path / "tls.txt"
    raw.write_text("Command execute failed!\n")
    proc, report = check(binary, tmp_path, scenario(**{"raw_tls.1": raw}))
    assert proc.returncode == 1
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [(c["device"], c["check"], c["seen"]) for c in bad] == [(1, "tls", 'no "tls switch" line in the output')]


def test_spod_info_garbage(binary, tmp_path):
    raw = tmp_path / "spod.txt"
    raw.write_text("SDID : 0x6400000\nSuper Pod ID : 0\n")
    missing = tmp_path / "spod2.txt"
    missing.write_text("Error: unsupported command\n")
    proc, report = check(binary, tmp_path, scenario(**{"raw_spod-info.0": raw, "raw_spod-info.3": missing}))
    assert proc.returncode == 1
    bad = {c["device"]: c for c in report["checks"] if not c["ok"]}
    assert sorted(bad) == [0, 3]
    assert bad[0]["check"] == "spod" and bad[0]["seen"] == "not a number"
    assert bad[0]["evidence"] == 'npu-smi: "SDID : 0x6400000"'
    assert bad[3]["seen"] == 'no "SDID :" line in the output'


def test_expected_sdid_and_pod_are_compared(binary, tmp_path):
    devs = [{"id": 0, "ip": VNIC[0], "sdid": 104857600, "pod": "0"},
            {"id": 1, "ip": VNIC[1], "sdid": 104857601, "pod": "7"}]
    proc, report = check(binary, tmp_path, spec_text=spec(devices=devs, peers=[]))
    assert proc.returncode == 1
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [(c["device"], c["expected"], c["seen"]) for c in bad] == [
        (1, "SDID 104857601, Super Pod ID 7", "SDID 104857601, Super Pod ID 0")]


def test_npu_smi_hanging_is_killed(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(hang__2="spod-info"))
    assert proc.returncode == 1
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [(c["device"], c["check"], c["state"], c["seen"]) for c in bad] == [
        (2, "spod", "timeout", "timeout after 2.0 s")]
    assert bad[0]["evidence"].startswith("npu-smi killed after 2.0 s")


def test_hccn_tool_hanging_on_hccs_ping(binary, tmp_path):
    proc, report = check(binary, tmp_path, scenario(hang__0="hccs_ping"))
    assert proc.returncode == 1
    assert {(c["device"], c["check"], c["state"]) for c in report["checks"] if not c["ok"]} == {
        (0, "hccs_ping", "timeout")}


def test_npu_smi_missing(binary, tmp_path):
    proc, report = check(binary, tmp_path, env={"LAUNCHER_NPU_SMI": str(tmp_path / "nope")})
    assert proc.returncode == 1
    assert {(c["check"], c["state"], c["seen"]) for c in report["checks"] if not c["ok"]} == {
        ("spod", "error", "npu-smi not found")}


def test_chips_per_card_maps_dies_to_card_and_chip(binary, tmp_path):
    log = tmp_path / "calls"
    text = scenario(log=log, chips_per_card=1)
    proc, _ = check(binary, tmp_path, text, spec_text=spec(chips_per_card=1, peers=[]))
    assert proc.returncode == 0, proc.stdout
    assert "npu-smi info -t spod-info -i 3 -c 0" in log.read_text().splitlines()


def test_spec_refuses_bad_a3_values(binary, tmp_path):
    for text, message in (
            ('{"devices": [{"id": 0, "ip": "10.0.0.1"}], "superpod": 1}', "expected true or false"),
            ('{"devices": [{"id": 0, "ip": "10.0.0.1"}], "chips_per_card": 0}', "chips_per_card must be an integer 1..16"),
            ('{"devices": [{"id": 0, "ip": "10.0.0.1", "sdid": 4294967296}]}', "sdid must be an integer"),
            ('{"devices": [{"id": 0, "ip": "10.0.0.1", "pod": ""}]}', "pod must not be empty")):
        proc = run(binary, ["--spec", "-"], tmp_path, stdin=text)
        assert proc.returncode == 2 and message in proc.stderr, (text, proc.stderr)


def _a3_plan():
    from launcher.deploy.files import compile_file
    from tests.helpers import CONFIGS
    return compile_file(str(CONFIGS / "a3-superpod-2x16.yaml")).plan


def test_the_launchers_a3_spec_passes_on_a_healthy_fake_a3_server(binary, tmp_path):
    """What `launcher check` sends a3-0 of configs/a3-superpod-2x16.yaml, run by the real checker
    against a fake A3 server whose vnic IPs and SDIDs match the topology."""
    from launcher.core import preflight
    chk = next(c for c in preflight.checks_for(_a3_plan()) if c.host == "a3-0")
    assert chk.spec["superpod"] is True and chk.spec["tls"] is True and chk.spec["chips_per_card"] == 2
    assert chk.spec["devices"][5] == {"id": 5, "ip": "192.168.2.15", "sdid": 104857605, "pod": "0"}
    assert len(chk.spec["peers"]) == 32
    text = "devices=" + ",".join(map(str, range(16))) + "\n" + "".join(
        f"vnic_ip.{d['id']}={d['ip']}\nsdid.{d['id']}={d['sdid']}\n" for d in chk.spec["devices"])
    proc, report = check(binary, tmp_path, text, spec_text=json.dumps({**chk.spec, "timeout": 5}))
    assert proc.returncode == 0, proc.stdout
    assert len(checks_of(report, "hccs_ping")) == 16 * 31  # every peer of the world but itself
    # the same server with one die of the other pod's numbering: the spod check says so
    proc, report = check(binary, tmp_path, text + "super_pod_id.9=1\n",
                         spec_text=json.dumps({**chk.spec, "peers": [], "timeout": 5}))
    assert [(c["device"], c["check"], c["seen"]) for c in report["checks"] if not c["ok"]] == [
        (9, "spod", "SDID 104857609, Super Pod ID 1")]


def test_a_tls_mismatch_across_hosts_of_a_world_is_refused(binary, tmp_path):
    """Two hosts' real checker reports, one die with TLS on: the world (instance) is refused."""
    from launcher.core import preflight
    from launcher.core.preflight_a3 import tls_mismatches
    plan = _a3_plan()
    checks = [c for c in preflight.checks_for(plan)]
    replies = []
    for chk in checks:
        text = "devices=" + ",".join(map(str, range(16))) + "\n" + "".join(
            f"vnic_ip.{d['id']}={d['ip']}\nsdid.{d['id']}={d['sdid']}\n" for d in chk.spec["devices"])
        if chk.host == "a3-1":
            text += "tls.3=1\n"
        _, report = check(binary, tmp_path, text, spec_text=json.dumps({**chk.spec, "peers": []}))
        replies.append({"report": report, "exit": 0})
    assert tls_mismatches(plan, [c.host for c in checks], replies) == {"deepseek-tp32": [
        "TLS switch differs across the devices of instance deepseek-tp32 (0 on a3-0 devices "
        "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15, a3-1 devices 0,1,2,4,5,6,7,8,9,10,11,12,13,14,15; 1 on a3-1 "
        "device 3): HCCL fails with EI0016; set one value on all (hccn_tool -i N -tls -s enable 0|1)"]}
    same = [{"report": {**r["report"], "checks": [c for c in r["report"]["checks"] if c["device"] != 3]}}
            for r in replies]
    assert tls_mismatches(plan, [c.host for c in checks], same) == {}


def test_a_world_across_super_pods_checks_the_dies_roce_nic_and_pings_over_it(binary, tmp_path):
    """spec "roce" (a3_ips: the table carries the NIC IPs): the NIC's link and IP (-ip, `ipaddr`)
    and -ping to the peers, not the vnic and -hccs_ping; the die's SuperPoD facts still checked."""
    nic = {0: "10.40.0.10", 1: "10.40.0.11", 2: "10.40.0.12", 3: "10.40.0.13"}
    log = tmp_path / "calls"
    text = scenario(log=log, **{f"ip__{d}": ip for d, ip in nic.items()}, link__2="DOWN")
    devs = [{"id": d, "ip": ip} for d, ip in nic.items()]
    proc, report = check(binary, tmp_path, text, spec(devs, roce=True))
    assert proc.returncode == 1  # device 2's NIC link is down
    assert [c["check"] for c in checks_of(report, device=3)] == ["link", "ip", "spod", "tls", "ping", "ping"]
    assert checks_of(report, "ip", 1)[0]["evidence"] == 'hccn_tool: "ipaddr:10.40.0.11"'
    assert [(c["device"], c["check"], c["seen"]) for c in report["checks"] if not c["ok"]] == [(2, "link", "DOWN")]
    calls = log.read_text().splitlines()
    assert "-i 0 -ping -g address 192.168.3.10" in calls
    assert not [c for c in calls if "-hccs_ping" in c or " -vnic " in c]
