"""What a pod's NPUs are, read from the driver's tools as the link checker reads them.

A2 servers: each device's IP, `hccn_tool -i N -ip -g`, the `ipaddr` line. Atlas A3 SuperPoD
servers (ranktable v1.2): each die's vnic IP (`hccn_tool -i N -vnic -g`, `vnic ipaddr`), its
SDID and its Super Pod ID (`npu-smi info -t spod-info -i CARD -c CHIP`, card = id // chips per
card, chip = id % chips per card; `SDID :` and `Super Pod ID :`, decimal, at most 10 digits), the
keys and rules of native/checks.c (lc_find_key: the first line whose text before its first ':'
is the key, both stripped).
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass

HCCN_TOOLS = ("/usr/local/bin/hccn_tool", "/usr/local/Ascend/driver/tools/hccn_tool")
NPU_SMIS = ("/usr/local/bin/npu-smi", "/usr/local/sbin/npu-smi")
_SPACE = " \t\r\v\f"


class Unreadable(Exception):
    """A device's facts could not be read; str() says which device and what the tool said."""


@dataclass(frozen=True)
class Device:
    id: int
    ip: str
    sdid: int | None = None  # Atlas A3 only
    pod: str | None = None   # Atlas A3 only


def find_key(output: str, key: str) -> str | None:
    """The value of the first `KEY: value` line (key and value stripped), as lc_find_key reads it."""
    for line in output.split("\n"):
        k, colon, value = line.partition(":")
        if colon and k.strip(_SPACE) == key:
            return value.strip(_SPACE)
    return None


def hccn_ip(output: str) -> str | None:
    return find_key(output, "ipaddr")


def _decimal(value: str | None) -> int | None:
    return int(value) if value and len(value) <= 10 and value.isdigit() and int(value) <= 4294967295 else None


def find_tool(given: str | None, places: tuple[str, ...], name: str) -> str:
    if given:
        return given
    for path in places:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name) or places[0]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unreadable(f"{' '.join(argv)}: {exc}") from None


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    return f"(exit {proc.returncode}): {(proc.stdout + proc.stderr).strip()[:200]!r}"


def read_devices(ids: list[int], hccn_tool: str, superpod: bool = False, npu_smi: str = "npu-smi",
                 chips_per_card: int = 2) -> list[Device]:
    out = []
    for d in ids:
        argv = [hccn_tool, "-i", str(d), "-vnic" if superpod else "-ip", "-g"]
        proc = _run(argv)
        ip = find_key(proc.stdout, "vnic ipaddr" if superpod else "ipaddr")
        try:
            ipaddress.IPv4Address(ip or "")
        except ValueError:
            raise Unreadable(f"device {d}: `{' '.join(argv)}` gave no IPv4 address {_said(proc)}") from None
        if not superpod:
            out.append(Device(d, str(ip)))
            continue
        argv = [npu_smi, "info", "-t", "spod-info", "-i", str(d // chips_per_card), "-c", str(d % chips_per_card)]
        proc = _run(argv)
        sdid, pod = _decimal(find_key(proc.stdout, "SDID")), _decimal(find_key(proc.stdout, "Super Pod ID"))
        if sdid is None or pod is None:
            raise Unreadable(f"device {d}: `{' '.join(argv)}` gave no SDID and Super Pod ID {_said(proc)}")
        out.append(Device(d, str(ip), sdid, str(pod)))
    pods = sorted({dev.pod for dev in out if dev.pod is not None})
    if len(pods) > 1:
        raise Unreadable(f"its dies report different Super Pod IDs {pods}")
    return out
