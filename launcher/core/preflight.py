"""Preflight: which links to check before an instance starts, and what to tell a person.

Pure: the plan says, per instance and host, which NPUs must be up with which IP and which
peer device IPs each must reach (every other device of the same HCCL world); the shell
(apply) runs launcher-linkcheck on the hosts and hands the replies back here to report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .plan import Plan
from .preflight_a3 import spec_for

PINGS = 3
MAX_LOSS = 0.0
TOOL_TIMEOUT = 5


@dataclass(frozen=True)
class HostCheck:
    instance: str
    host: str
    hccn_tool: str | None
    spec: dict[str, Any]
    link: str | None = None      # an LLM-DataDist link this check is for (the decoder side pings the listener)
    dcmi_lib: str | None = None

    @property
    def tool_args(self) -> tuple[str, str]:
        """hostside linkcheck's arguments: where hccn_tool and libdcmi.so are ('-': default)."""
        return (self.hccn_tool or "-", self.dcmi_lib or "-")

    @property
    def key(self) -> str:
        return f"{self.instance}@{self.host}" + (f"#{self.link}" if self.link else "")


def checks_for(plan: Plan, instances: list[str] | None = None) -> list[HostCheck]:
    """One checker run per (instance, host): its devices, and every other device of the instance as a peer.

    A world on one host talks over HCCS, not RoCE: it gets the device checks but no pings.
    """
    tools = {hp.host.name: hp.host.hccn_tool for hp in plan.hosts}
    libs = {hp.host.name: hp.host.dcmi_lib for hp in plan.hosts}
    host_of = {hp.host.name: hp.host for hp in plan.hosts}
    out = []
    for inst in plan.instances:
        if instances is not None and inst.name not in instances:
            continue
        peers = [r.device_ip for r in inst.ranks] if len(inst.hosts) > 1 else []
        for host in inst.hosts:
            mine = [r for r in inst.ranks if r.host == host]
            # the checker skips a device's own IP, so each device pings the other world_size - 1
            spec = {"host": host, "devices": [{"id": r.device_id, "ip": r.device_ip} for r in mine],
                    "peers": peers, "pings": PINGS, "max_loss": MAX_LOSS, "timeout": TOOL_TIMEOUT}
            out.append(HostCheck(inst.name, host, tools[host], spec_for(host_of[host], spec), dcmi_lib=libs[host]))
    # LLM-DataDist: the decoder's device must reach the prompt side's listen IP over RoCE
    # (the link goes NPU to NPU, so this is the device plane, not a host TCP port).
    for name, members in plan.links:
        listeners = [m.listen.rsplit(":", 1)[0] for m in members if m.listen]
        for m in members:
            if m.role != "decoder" or (instances is not None and m.instance not in instances):
                continue
            spec = {"host": m.host, "devices": [{"id": m.device_id, "ip": m.device_ip}], "peers": listeners,
                    "pings": PINGS, "max_loss": MAX_LOSS, "timeout": TOOL_TIMEOUT}
            out.append(HostCheck(m.instance, m.host, tools[m.host], spec_for(host_of[m.host], spec), link=name,
                                 dcmi_lib=libs[m.host]))
    return out


def failure_lines(check: HostCheck, reply: dict[str, Any]) -> list[str]:
    """What failed, one line each, in the checker's own words; [] when all passed."""
    report = reply.get("report")
    if report is None:
        said = reply.get("stderr") or f"exit code {reply.get('exit')}, no report"
        return [f"{check.host}: link check could not run: {said}"]
    suffix = f" [LLM-DataDist link {check.link}]" if check.link else ""
    lines = []
    for c in report.get("checks", []):
        if c.get("ok"):
            continue
        what = c["check"] + (f" {c['peer']}" if c.get("peer") else "")
        lines.append(f"{check.host} device {c['device']}: {what}: expected {c.get('expected')}, "
                     f"seen {c.get('seen')} ({c.get('evidence', c.get('source'))}){suffix}")
    if not lines and reply.get("exit") not in (0, None):
        lines.append(f"{check.host}: link check exited {reply['exit']}: {reply.get('stderr', '')}")
    return lines


def device_matrix(plan: Plan, checks: list[HostCheck],
                  replies: Mapping[str, dict[str, Any]]) -> list[tuple[str, int, str]]:
    """Rows host x device: 'ok', or the failed checks' names; ``replies`` by HostCheck.key."""
    cells: dict[tuple[str, int], list[str]] = {}
    for chk in checks:
        reply = replies.get(chk.key, {})
        report = reply.get("report")
        for dev in chk.spec["devices"]:
            key = (chk.host, dev["id"])
            cells.setdefault(key, [])
            if report is None:
                cells[key].append("not run")
                continue
            for c in report.get("checks", []):
                if c["device"] == dev["id"] and not c.get("ok"):
                    cells[key].append(c["check"] + (f"->{c['peer']}" if c.get("peer") else ""))
    rows = []
    for (host, dev), bad in sorted(cells.items()):
        rows.append((host, dev, "ok" if not bad else "FAIL: " + ", ".join(dict.fromkeys(bad))))
    return rows
