"""Benchmark of the preflight: `launcher check` on 16 testbed hosts x 8 NPUs, 15 peers per NPU.

8 instances of 2 hosts x 8 NPUs (so each device pings the 15 other devices of its world),
the fake hccn_tool answering each ping line after 50 ms (150 ms per 3-packet ping). Prints
the wall time of `launcher check` and the serial equivalent (the sum of every tool call's
time as the checker measured it), and a floor measured in the same run, interleaved with it:
every tool call the checker made (read from its report) started at once on every host, one
`ssh` per host, all hosts at once (one round trip + 3 x 50 ms for the slowest ping). As a table
and a last line
`hosts=16 devices=128 checks=N seconds=S serial_seconds=T speedup=X floor_seconds=F ratio=R`
(R = S / F, each the median of --repeat).

    sudo python bench/check_bench.py [--hosts 16] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.testbed import Testbed  # noqa: E402
from as_installed import byte_compile  # noqa: E402

DEVICES = range(8)


def ip(h: int, d: int) -> str:
    return f"10.97.{h}.{d + 1}"


def floor_script(report: dict) -> str:
    """A shell script that starts every hccn_tool call of one host's report at once and waits for them."""
    calls = []
    for c in report["checks"]:
        if c["source"] != "hccn_tool":
            continue
        argv = ["/srv/npu/hccn_tool", "-i", str(c["device"]), f"-{c['check']}", "-g"]
        if c["peer"]:
            argv += ["address", c["peer"]]
        calls.append(" ".join(argv) + " >/dev/null &")
    return "\n".join(calls + ["wait"])


def floor_round(ssh_config: Path, scripts: dict[str, str]) -> float:
    """Every host's script at once over one ssh per host; the wall time of the whole round."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(["ssh", "-F", str(ssh_config), host, "--", "sh", "-c", repr_sh(script)],
                              stdout=subprocess.DEVNULL) for host, script in scripts.items()]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    assert not any(codes), f"a floor ssh failed: {codes}"
    return wall


def repr_sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    byte_compile(ROOT / "launcher")
    fake_dir = Path(tempfile.mkdtemp(prefix="launcher-bench-npu-", dir="/var/tmp"))
    fake_dir.chmod(0o755)
    subprocess.run(["make", "-s", "-C", str(ROOT / "tests/native"), f"OUT={fake_dir}"], check=True)
    work = Path(tempfile.mkdtemp(prefix="check-bench-"))
    try:
        with Testbed.up(args.hosts) as tb:
            for i, h in enumerate(tb.hosts):
                base = Path(h.path("/srv/npu"))
                base.mkdir(mode=0o755, exist_ok=True)
                (base / "scenario").write_text(f"devices={','.join(map(str, DEVICES))}\nping_delay_ms=50\n"
                                               + "".join(f"ip.{d}={ip(i, d)}\n" for d in DEVICES))
                wrapper = base / "hccn_tool"
                wrapper.write_text(f"#!/bin/sh\nFAKE_NPU_SCENARIO=/srv/npu/scenario exec "
                                   f"{fake_dir}/fake_hccn_tool \"$@\"\n")
                wrapper.chmod(0o755)
            hosts = "".join(
                f"  - name: {h.name}\n    address: {h.address}\n"
                f"    ssh: {{user: {tb.user}, identity_file: {tb.identity_file}}}\n"
                f"    devices: {{{', '.join(f'{d}: {ip(i, d)}' for d in DEVICES)}}}\n"
                for i, h in enumerate(tb.hosts))
            insts = "".join(f"  - {{name: m{k}, hosts: [{tb.hosts[2 * k].name}, {tb.hosts[2 * k + 1].name}], "
                            f"command: [sleep, '1']}}\n" for k in range(args.hosts // 2))
            topo = work / "topo.yaml"
            topo.write_text(f"version: 1\nname: checkbench\ndefaults:\n  deploy_dir: /srv/launcher\n"
                            f"  hccn_tool: /srv/npu/hccn_tool\nhosts:\n{hosts}instances:\n{insts}")
            cmd = [sys.executable, "-m", "launcher", "check", str(topo), "--json",
                   "--ssh-config", str(tb.ssh_config), "--known-hosts", str(tb.known_hosts)]
            # warm: runtime shipped, checker built; its report says which calls the floor makes
            warm = json.loads(subprocess.run(cmd, capture_output=True, cwd=ROOT, text=True).stdout)
            scripts: dict[str, str] = {}
            for r in warm["checks"].values():  # a host in several instances runs each one's calls
                host = r["report"]["host"]
                scripts[host] = floor_script(r["report"]) if host not in scripts else \
                    scripts[host].removesuffix("wait") + floor_script(r["report"])
            walls, serials, floors, checks = [], [], [], 0
            for _ in range(args.repeat):
                floors.append(floor_round(tb.ssh_config, scripts))
                t0 = time.monotonic()
                proc = subprocess.run(cmd, capture_output=True, cwd=ROOT, text=True)
                walls.append(time.monotonic() - t0)
                doc = json.loads(proc.stdout)
                calls = [c for r in doc["checks"].values() for c in r["report"]["checks"]]
                checks = len(calls)
                # serial equivalent: every tool call one after the other, each at its uncontended cost
                # (a ping answers after 3 x 50 ms; the other calls take what the fastest of their kind took)
                fastest: dict[str, float] = {}
                for c in calls:
                    fastest[c["check"]] = min(fastest.get(c["check"], c["seconds"]), c["seconds"])
                serials.append(sum(max(fastest[c["check"]], 0.15 if c["check"] == "ping" else 0.0) for c in calls))
                assert doc["ok"], "a check failed in the benchmark scenario"
            wall, serial = statistics.median(walls), statistics.median(serials)
            floor = statistics.median(floors)
            print(f"launcher check: {args.hosts} hosts x {len(DEVICES)} NPUs, 15 peers per NPU, fake ping 150 ms "
                  f"(3 x 50 ms), median of {args.repeat}")
            print(f"  {'checks (tool calls)':<28} {checks}")
            print(f"  {'wall time':<28} {wall:8.2f} s")
            print(f"  {'serial equivalent':<28} {serial:8.2f} s")
            print(f"  {'speedup':<28} {serial / wall:8.1f} x")
            print(f"  {'floor (all calls at once)':<28} {floor:8.2f} s")
            print(f"  {'ratio to the floor':<28} {wall / floor:8.2f} x   (load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} CPUs)")
            print(f"hosts={args.hosts} devices={args.hosts * len(DEVICES)} checks={checks} seconds={wall:.2f} "
                  f"serial_seconds={serial:.2f} speedup={serial / wall:.1f} floor_seconds={floor:.2f} "
                  f"ratio={wall / floor:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(fake_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
