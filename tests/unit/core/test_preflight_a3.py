"""Preflight specs on A2 and A3 hosts, and the TLS switch compared across a world and a link."""
from __future__ import annotations

from launcher.core import preflight
from launcher.core.preflight_a3 import tls_mismatches
from launcher.deploy.files import compile_file
from tests.helpers import CONFIGS


def _tls_reply(values: dict[int, str]) -> dict:
    return {"report": {"checks": [{"device": d, "check": "tls", "ok": True, "seen": v} for d, v in values.items()]}}


def test_an_a2_host_reads_tls_but_keeps_its_a2_checks():
    checks = preflight.checks_for(compile_file(str(CONFIGS / "mindie-atb-2x8.yaml")).plan)
    assert all(c.spec["tls"] is True and "superpod" not in c.spec for c in checks)
    assert checks[0].spec["devices"][0] == {"id": 0, "ip": "10.10.100.10"}


def test_a2_world_with_two_tls_values_is_refused():
    plan = compile_file(str(CONFIGS / "mindie-atb-2x8.yaml")).plan
    hosts = ["huawei89", "huawei91"]
    ok = tls_mismatches(plan, hosts, [_tls_reply({d: "0" for d in range(8)}), _tls_reply({d: "0" for d in range(8)})])
    assert ok == {}
    bad = tls_mismatches(plan, hosts, [_tls_reply({d: "0" for d in range(8)}), _tls_reply({d: "1" for d in range(8)})])
    assert list(bad) == ["llama2-70b"] and "0 on huawei89 devices 0,1,2,3,4,5,6,7; 1 on huawei91 devices" in bad[
        "llama2-70b"][0]


def test_a3_link_checks_use_superpod_mode_and_a_link_mismatch_names_the_link():
    plan = compile_file(str(CONFIGS / "a3-pd-datadist.yaml")).plan
    checks = preflight.checks_for(plan)
    link = [c for c in checks if c.link == "pd_comm_1_3"]
    assert len(link) == 1 and link[0].spec["superpod"] is True
    assert link[0].spec["devices"] == [{"id": 0, "ip": "192.168.31.10", "sdid": 104923136, "pod": "0"}]
    assert link[0].spec["peers"] == ["192.168.30.10"]  # the prompt's listen IP, over -hccs_ping
    # prefill-0's world agrees (all 0), but the decoder's device 0 says 1: the link and decode-0's world differ
    bad = tls_mismatches(plan, ["a3-p", "a3-d"], [_tls_reply({d: "0" for d in range(16)}),
                                                   _tls_reply({0: "1", **{d: "0" for d in range(1, 16)}})])
    assert sorted(bad) == ["decode-0"]
    assert [line.split(" (")[0] for line in bad["decode-0"]] == [
        "TLS switch differs across the devices of instance decode-0",
        "TLS switch differs across the devices of LLM-DataDist link pd_comm_1_3"]


def test_a_world_across_super_pods_checks_the_dies_nic_not_the_vnic():
    """configs/a3-two-superpods.yaml: one instance over two pods, so its table carries the NIC IPs
    and each host's checker run is told "roce" (link, -ip, -ping), with those IPs expected."""
    checks = preflight.checks_for(compile_file(str(CONFIGS / "a3-two-superpods.yaml")).plan)
    assert checks and all(c.spec["superpod"] is True and c.spec.get("roce") is True for c in checks)
    first = checks[0].spec["devices"][0]
    assert first["ip"] == "10.40.10.10" and first["sdid"] == 104857600
    inside = preflight.checks_for(compile_file(str(CONFIGS / "a3-superpod-2x16.yaml")).plan)
    assert inside and all("roce" not in c.spec for c in inside)  # one pod over HCCS: the vnic
