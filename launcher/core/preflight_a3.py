"""Preflight on Atlas A3, and the TLS switch compared across every device of a world.

What the link checker's spec gets, and the one finding no single host can make. A SuperPoD host's checker run says "superpod": vnic link and the vnic's IP, the die's SDID and
Super Pod ID from npu-smi (compared with the topology's), -hccs_ping instead of -ping
(vLLM-Ascend's A3 multi-node guide); for a world whose table carries the dies' NIC IPs (across
SuperPoDs, a3_ips.py) also "roce": the NIC's link and IP (-ip) and -ping, as HCCL goes there. Every run says "tls": each device's `hccn_tool -i N -tls -g`;
a mismatch across one world fails HCCL with EI0016, on A2 as on A3.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .model import Host
from .plan import Plan

DEFAULT_CHIPS_PER_CARD = 2  # Atlas A3: two dies per card


def spec_for(host: Host, spec: dict[str, Any]) -> dict[str, Any]:
    """The checker spec of one run on this host, with the TLS read and, on a SuperPoD host, A3 mode."""
    out = {**spec, "tls": True}
    if not host.superpod:
        return out
    devices = []
    roce = False
    for d in spec["devices"]:
        dev = host.device(d["id"])
        roce = roce or (dev is not None and dev.nic_ip is not None and d["ip"] == dev.nic_ip != dev.ip)
        entry = dict(d)
        if dev is not None and dev.sdid is not None:
            entry["sdid"] = dev.sdid
        if host.super_pod_id is not None:
            entry["pod"] = host.super_pod_id
        devices.append(entry)
    return {**out, "devices": devices, "superpod": True, **({"roce": True} if roce else {}),
            "chips_per_card": host.chips_per_card or DEFAULT_CHIPS_PER_CARD}


def _tls_seen(replies: Iterable[Mapping[str, Any]], hosts: Iterable[str]) -> dict[tuple[str, int], str]:
    seen: dict[tuple[str, int], str] = {}
    for host, reply in zip(hosts, replies):
        report = reply.get("report") or {}
        for c in report.get("checks", []):
            if c.get("check") == "tls" and c.get("ok"):
                seen[(host, c["device"])] = str(c.get("seen"))
    return seen


def _describe(values: Mapping[tuple[str, int], str]) -> str:
    by_value: dict[str, dict[str, list[int]]] = {}
    for (host, dev), v in sorted(values.items()):
        by_value.setdefault(v, {}).setdefault(host, []).append(dev)
    return "; ".join(f"{v} on " + ", ".join(f"{h} device{'s' if len(ds) > 1 else ''} {','.join(map(str, ds))}"
                                            for h, ds in hosts.items()) for v, hosts in sorted(by_value.items()))


def tls_mismatches(plan: Plan, check_hosts: Iterable[str],
                   replies: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """instance -> one line when the TLS switch differs across its world (or across an LLM-DataDist
    link it is the decoder side of); ``check_hosts`` and ``replies`` pair up, one per checker run."""
    seen = _tls_seen(list(replies), list(check_hosts))
    worlds: list[tuple[str, str, list[tuple[str, int]]]] = [
        (inst.name, f"instance {inst.name}", [(r.host, r.device_id) for r in inst.ranks]) for inst in plan.instances]
    for name, members in plan.links:
        for m in members:
            if m.role == "decoder":
                worlds.append((m.instance, f"LLM-DataDist link {name}", [(x.host, x.device_id) for x in members]))
    out: dict[str, list[str]] = {}
    for owner, what, devices in worlds:
        values = {d: seen[d] for d in devices if d in seen}
        if len(set(values.values())) > 1:
            out.setdefault(owner, []).append(
                f"TLS switch differs across the devices of {what} ({_describe(values)}): HCCL fails with "
                f"EI0016; set one value on all (hccn_tool -i N -tls -s enable 0|1)")
    return out
