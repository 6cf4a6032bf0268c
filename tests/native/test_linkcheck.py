"""launcher-linkcheck (native/) against the NPU-boundary fakes.

Every scenario runs against the release build and the ASan/UBSan build; the latter
must leave no sanitizer report on stderr. The fakes are tests/native/fake_hccn_tool.c
and tests/native/fake_dcmi.c, driven by a scenario file (see README.md here).
"""
import json
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "runtime error:")
BASE_DEVICES = {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.4"}
BASE_PEERS = ["10.0.1.1", "10.0.1.2"]
BASE_CHECKS = len(BASE_DEVICES) * (3 + len(BASE_PEERS))


@dataclass(frozen=True)
class Build:
    plain: Path
    asan: Path
    tool: Path      # fake hccn_tool
    dcmi: Path      # fake libdcmi.so
    dcmi_old: Path  # same, without dcmi_get_card_id_device_id_from_logicid


@dataclass(frozen=True)
class Binary:
    path: Path
    sanitized: bool
    tool: Path


@pytest.fixture(scope="session")
def build(tmp_path_factory):
    missing = [tool for tool in ("gcc", "make") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed, so native/ cannot be built "
                    "(apt-get install gcc make)")
    out = tmp_path_factory.mktemp("native-build")
    fakes = out / "fakes"
    for directory, target_out, targets in ((ROOT / "native", out, ["all", "asan"]),
                                           (HERE, fakes, ["all"])):
        made = subprocess.run(["make", "-C", str(directory), f"OUT={target_out}", *targets],
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stdout + made.stderr
    return Build(out / "launcher-linkcheck", out / "asan" / "launcher-linkcheck",
                 fakes / "fake_hccn_tool", fakes / "libdcmi.so", fakes / "old" / "libdcmi.so")


@pytest.fixture(params=["release", "asan"])
def binary(request, build):
    if request.param == "asan":
        return Binary(build.asan, True, build.tool)
    return Binary(build.plain, False, build.tool)


def scenario_text(**overrides):
    """The base scenario (4 healthy devices) with key=value overrides; '.' in keys
    is written as '__' in Python names, e.g. link__3="DOWN"."""
    lines = {"devices": ",".join(str(d) for d in BASE_DEVICES)}
    lines.update({f"ip.{d}": ip for d, ip in BASE_DEVICES.items()})
    for key, value in overrides.items():
        lines[key.replace("__", ".")] = str(value)
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def base_args(host="h1", devices=BASE_DEVICES, peers=BASE_PEERS):
    args = ["--host", host]
    for dev, ip in devices.items():
        args += ["--device", f"{dev}={ip}"]
    for peer in peers:
        args += ["--peer", peer]
    return args


def run(binary, args, tmp_path, scenario=None, env=None, stdin=None, timeout=120):
    """Runs the checker with the fakes; asserts a sanitized build stayed silent."""
    path = tmp_path / "scenario"
    path.write_text(scenario if scenario is not None else scenario_text())
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LAUNCHER_HCCN_TOOL": str(binary.tool),
        "LAUNCHER_DCMI_LIB": "none",
        "FAKE_NPU_SCENARIO": str(path),
        "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    proc = subprocess.run([str(binary.path), *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=timeout)
    if binary.sanitized:
        for marker in SANITIZER_MARKERS:
            assert marker not in proc.stderr, proc.stderr
    return proc


def run_json(binary, args, tmp_path, **kw):
    proc = run(binary, [*args, "--json"], tmp_path, **kw)
    return proc, json.loads(proc.stdout)


def checks_of(report, check=None, device=None):
    return [c for c in report["checks"]
            if (check is None or c["check"] == check)
            and (device is None or c["device"] == device)]


def test_all_good(binary, tmp_path):
    devices = {d: f"10.0.0.{d + 1}" for d in range(8)}
    peers = ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    text = "devices=0,1,2,3,4,5,6,7\nping_delay_ms=50\n" + "".join(
        f"ip.{d}={ip}\n" for d, ip in devices.items())
    proc = run(binary, base_args(devices=devices, peers=peers), tmp_path, scenario=text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "linkcheck: 48 checks, 0 failed\n"
    proc, report = run_json(binary, base_args(devices=devices, peers=peers), tmp_path,
                            scenario=text)
    assert proc.returncode == 0
    assert report["host"] == "h1" and report["ok"] is True
    assert len(report["checks"]) == 48
    assert {(c["ok"], c["state"], c["source"]) for c in report["checks"]} == {
        (True, "pass", "hccn_tool")}
    ping = checks_of(report, "ping", 7)[2]
    assert ping["peer"] == "10.0.1.3" and ping["seen"] == "0.00%"
    assert ping["raw"].endswith("3 packets transmitted, 3 received, 0.00% packet loss\n")


def test_link_down_on_device_3(binary, tmp_path):
    proc = run(binary, base_args(), tmp_path, scenario=scenario_text(link__3="DOWN"))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        'h1 device 3: link: expected UP, seen DOWN (hccn_tool: "link status: DOWN")',
        f"linkcheck: {BASE_CHECKS} checks, 1 failed",
    ]


def test_optical_module_absent(binary, tmp_path):
    proc, report = run_json(binary, base_args(), tmp_path,
                            scenario=scenario_text(optical__3="not present"))
    assert proc.returncode == 1
    [optical] = [c for c in report["checks"] if not c["ok"]]
    assert optical["device"] == 3 and optical["check"] == "optical"
    assert (optical["expected"], optical["seen"]) == ("present", "not present")
    proc = run(binary, base_args(), tmp_path, scenario=scenario_text(optical__3="not present"))
    assert proc.stdout.splitlines()[0] == (
        'h1 device 3: optical: expected present, seen not present '
        '(hccn_tool: "present              : not present")')


def test_device_ip_differs_from_expected(binary, tmp_path):
    proc = run(binary, base_args(), tmp_path, scenario=scenario_text(ip__2="10.0.0.99"))
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        'h1 device 2: ip: expected 10.0.0.3, seen 10.0.0.99 (hccn_tool: "ipaddr:10.0.0.99")',
        f"linkcheck: {BASE_CHECKS} checks, 1 failed",
    ]


def test_one_lost_ping_of_three(binary, tmp_path):
    text = scenario_text(ping_loss__0__10__0__1__2=1)
    proc = run(binary, base_args(), tmp_path, scenario=text)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "h1 device 0: ping 10.0.1.2: expected loss <= 0.00%, seen 33.33% (hccn_tool: "
        '"3 packets transmitted, 2 received, 33.33% packet loss")',
        f"linkcheck: {BASE_CHECKS} checks, 1 failed",
    ]
    proc, report = run_json(binary, base_args(), tmp_path, scenario=text)
    [ping] = [c for c in report["checks"] if not c["ok"]]
    assert "recv time out seq=0\n" in ping["raw"]
    # The threshold is inclusive and exact to the hundredth.
    assert run(binary, [*base_args(), "--max-loss", "33.33"], tmp_path,
               scenario=text).returncode == 0
    assert run(binary, [*base_args(), "--max-loss", "33.32"], tmp_path,
               scenario=text).returncode == 1


def test_ping_count_is_passed_as_pkt_only_when_not_default(binary, tmp_path):
    log = tmp_path / "calls.log"
    text = scenario_text(log=log)
    devices, peers = {0: "10.0.0.1"}, ["10.0.1.1"]
    assert run(binary, base_args(devices=devices, peers=peers), tmp_path,
               scenario=text).returncode == 0
    assert "-i 0 -ping -g address 10.0.1.1\n" in log.read_text()
    log.unlink()
    proc, report = run_json(binary, [*base_args(devices=devices, peers=peers), "--pings", "5"],
                            tmp_path, scenario=text)
    assert proc.returncode == 0
    assert "-i 0 -ping -g address 10.0.1.1 pkt 5\n" in log.read_text()
    assert "5 packets transmitted, 5 received" in checks_of(report, "ping")[0]["raw"]


def test_unknown_device_reports_the_tools_words(binary, tmp_path):
    proc = run(binary, base_args(devices={9: "10.0.0.10"}, peers=[]), tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == (
        'h1 device 9: link: expected UP, seen no "link status:" line in the output '
        '(hccn_tool exit 255: "Error: device id 9 is invalid. Please check the device id.")')


def test_a_device_does_not_ping_its_own_address(binary, tmp_path):
    proc, report = run_json(binary, base_args(peers=["10.0.0.1", "10.0.1.1"]), tmp_path)
    assert proc.returncode == 0
    assert [c["peer"] for c in checks_of(report, "ping", 0)] == ["10.0.1.1"]
    assert [c["peer"] for c in checks_of(report, "ping", 1)] == ["10.0.0.1", "10.0.1.1"]


def test_hccn_tool_missing(binary, tmp_path):
    if Path("/usr/local/Ascend/driver/tools/hccn_tool").exists():
        pytest.skip("this machine has a real hccn_tool at the default path")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = run(binary, base_args(), tmp_path,
               env={"LAUNCHER_HCCN_TOOL": None, "PATH": str(empty)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "launcher-linkcheck: hccn_tool not found; tried LAUNCHER_HCCN_TOOL (unset), "
        f"/usr/local/Ascend/driver/tools/hccn_tool, and hccn_tool in PATH ({empty}). "
        "Install the Ascend driver tools or set LAUNCHER_HCCN_TOOL\n")
    proc = run(binary, base_args(), tmp_path, env={"LAUNCHER_HCCN_TOOL": "/nonexistent/tool"})
    assert proc.returncode == 2
    assert proc.stderr == ("launcher-linkcheck: hccn_tool not found: "
                           "LAUNCHER_HCCN_TOOL=/nonexistent/tool is not an executable file\n")


def test_hccn_tool_found_in_path(binary, tmp_path):
    if Path("/usr/local/Ascend/driver/tools/hccn_tool").exists():
        pytest.skip("this machine has a real hccn_tool at the default path")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "hccn_tool").symlink_to(binary.tool)
    path = f"{tmp_path / 'nothing-here'}:{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    proc = run(binary, base_args(), tmp_path, env={"LAUNCHER_HCCN_TOOL": None, "PATH": path})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"linkcheck: {BASE_CHECKS} checks, 0 failed\n"


def process_gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie is dead; only its parent may not have reaped it


def test_hanging_hccn_tool_times_out(binary, tmp_path):
    pids = tmp_path / "grandchildren"
    text = scenario_text(hang="ping", hang_pidfile=pids)
    start = time.monotonic()
    proc, report = run_json(binary, [*base_args(), "--timeout", "2"], tmp_path, scenario=text,
                            timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    pings = checks_of(report, "ping")
    assert len(pings) == 8
    for ping in pings:
        assert (ping["ok"], ping["state"], ping["seen"]) == (False, "timeout",
                                                              "timeout after 2.0 s")
    assert all(c["ok"] for c in report["checks"] if c["check"] != "ping")
    # The tool's own children die with it (its process group is killed).
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 8
    deadline = time.monotonic() + 10
    while not all(process_gone(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(process_gone(p) for p in started)


def test_terminated_checker_leaves_no_tool_behind(binary, tmp_path):
    pids = tmp_path / "grandchildren"
    scenario = tmp_path / "scenario"
    scenario.write_text(scenario_text(hang="ping", hang_pidfile=pids))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LAUNCHER_HCCN_TOOL": str(binary.tool),
           "LAUNCHER_DCMI_LIB": "none", "FAKE_NPU_SCENARIO": str(scenario)}
    proc = subprocess.Popen([str(binary.path), *base_args(), "--timeout", "600"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while (not pids.exists() or len(pids.read_text().split()) < 8) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 8
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == -15
    assert b"Sanitizer" not in err
    deadline = time.monotonic() + 10
    while not all(process_gone(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(process_gone(p) for p in started)


def test_hanging_human_line(binary, tmp_path):
    text = scenario_text(hang="link", devices="0")
    proc = run(binary, [*base_args(devices={0: "10.0.0.1"}, peers=[]), "--timeout", "1"],
               tmp_path, scenario=text)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "h1 device 0: link: expected UP, seen timeout after 1.0 s "
        "(hccn_tool killed after 1.0 s, last output: no output)",
        "linkcheck: 3 checks, 1 failed",
    ]


DCMI_SCENARIO = dict(
    # physical -> logic ids reversed; two chips per card; card ids start at 4
    dcmi_logic__0=3, dcmi_logic__1=2, dcmi_logic__2=1, dcmi_logic__3=0,
    dcmi_chips_per_card=2, dcmi_card_base=4,
    net_health__3=3,  # Unreachable
    net_health__1=6,  # Init: healthy
)


@pytest.mark.parametrize("lib", ["dcmi", "dcmi_old"])
def test_dcmi_path(binary, build, tmp_path, lib):
    log = tmp_path / "calls.log"
    text = scenario_text(log=log, **DCMI_SCENARIO)
    env = {"LAUNCHER_DCMI_LIB": str(getattr(build, lib))}
    proc, report = run_json(binary, base_args(), tmp_path, scenario=text, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    ips = checks_of(report, "ip")
    assert [(c["source"], c["ok"], c["seen"]) for c in ips] == [
        ("dcmi", True, ip) for ip in BASE_DEVICES.values()]
    assert ips[2]["raw"] == "dcmi_get_device_ip(card 4, device 1, ROCE, port 0) = 0, 10.0.0.3"
    health = {c["device"]: c for c in checks_of(report, "net_health")}
    assert [health[d]["ok"] for d in range(4)] == [True, True, True, False]
    assert health[1]["seen"] == "Init (6)"
    assert health[3]["seen"] == "Unreachable (3)"
    assert " -ip " not in log.read_text()  # DCMI replaced hccn_tool -ip -g
    proc = run(binary, base_args(), tmp_path, scenario=text, env=env)
    assert proc.stdout.splitlines() == [
        "h1 device 3: net_health: expected Success or Init, seen Unreachable (3) "
        '(dcmi: "dcmi_get_device_network_health(card 4, device 0) = 0, result 3")',
        f"linkcheck: {BASE_CHECKS + 4} checks, 1 failed",
    ]


def test_dcmi_ip_mismatch_and_unknown_device(binary, build, tmp_path):
    text = scenario_text(dcmi_ip__2="10.0.0.99", **DCMI_SCENARIO)
    args = base_args(devices={**BASE_DEVICES, 7: "10.0.0.8"}, peers=[])
    proc = run(binary, args, tmp_path, scenario=text,
               env={"LAUNCHER_DCMI_LIB": str(build.dcmi)})
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert ('h1 device 2: ip: expected 10.0.0.3, seen 10.0.0.99 (dcmi: '
            '"dcmi_get_device_ip(card 4, device 1, ROCE, port 0) = 0, 10.0.0.99")') in lines
    assert ('h1 device 7: ip: expected 10.0.0.8, seen no such device in DCMI '
            '(dcmi: "dcmi_get_device_logicid_from_phyid(7) = -8001")') in lines


def test_dcmi_hang_is_a_timeout(binary, build, tmp_path):
    text = scenario_text(dcmi_hang="dcmi_get_device_network_health")
    start = time.monotonic()
    proc, report = run_json(binary, base_args(), tmp_path, scenario=text,
                            env={"LAUNCHER_DCMI_LIB": str(build.dcmi)}, timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    health = checks_of(report, "net_health")
    assert health[0]["state"] == "timeout"
    assert health[0]["seen"] == ("timeout: dcmi_get_device_network_health did not return "
                                 "within 1.0 s")
    # Once a call hangs the library is not entered again.
    later = checks_of(report, "ip", 1)[0]
    assert later["state"] == "timeout"
    assert later["seen"] == "timeout: not run, dcmi_get_device_network_health hung earlier"
    assert all(c["ok"] for c in report["checks"] if c["source"] == "hccn_tool")


def test_dcmi_init_failure_falls_back_to_hccn_tool(binary, build, tmp_path):
    proc, report = run_json(binary, base_args(), tmp_path, scenario=scenario_text(dcmi_init=-1),
                            env={"LAUNCHER_DCMI_LIB": str(build.dcmi)})
    assert proc.returncode == 0
    assert proc.stderr == (f"launcher-linkcheck: warning: {build.dcmi}: dcmi_init returned -1; "
                           "the ip check uses hccn_tool\n")
    assert {c["source"] for c in checks_of(report, "ip")} == {"hccn_tool"}
    assert checks_of(report, "net_health") == []


def test_dcmi_library_that_does_not_load(binary, tmp_path):
    proc = run(binary, base_args(), tmp_path,
               env={"LAUNCHER_DCMI_LIB": str(tmp_path / "nope.so")})
    assert proc.returncode == 0
    assert proc.stderr.startswith(
        f"launcher-linkcheck: warning: cannot load LAUNCHER_DCMI_LIB={tmp_path / 'nope.so'}: ")
    assert proc.stderr.endswith("; the ip check uses hccn_tool\n")


def test_json_spec_on_stdin(binary, tmp_path):
    spec = {"host": "h9", "devices": [{"id": 0, "ip": "10.0.0.1"}, {"id": 3, "ip": "10.0.0.4"}],
            "peers": ["10.0.1.2"], "pings": 3, "max_loss": 40.0, "timeout": 5}
    text = scenario_text(ping_loss__3__10__0__1__2=1, link__0="DOWN")
    proc, report = run_json(binary, ["--spec", "-"], tmp_path, scenario=text,
                            stdin=json.dumps(spec))
    assert proc.returncode == 1, proc.stderr
    assert report["host"] == "h9" and report["ok"] is False
    assert [(c["device"], c["check"], c["ok"]) for c in report["checks"]] == [
        (0, "link", False), (0, "optical", True), (0, "ip", True), (0, "ping", True),
        (3, "link", True), (3, "optical", True), (3, "ip", True), (3, "ping", True)]
    ping = checks_of(report, "ping", 3)[0]
    assert (ping["expected"], ping["seen"]) == ("loss <= 40.00%", "33.33%")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    assert run(binary, ["--spec", str(spec_file)], tmp_path, scenario=text).returncode == 1


USAGE_ERRORS = [
    ([], None, "no devices: give --device ID=EXPECTED_IP at least once, or --spec"),
    (["--device", "3"], None, '--device: expected ID=EXPECTED_IP (e.g. 0=10.0.0.1), got "3"'),
    (["--device", "3=10.0.0.x"], None, 'device ip: "10.0.0.x" is not an IPv4 or IPv6 address'),
    (["--device", "0=10.0.0.1", "--device", "0=10.0.0.2"], None, "device 0 given twice"),
    (["--device", "300=10.0.0.1"], None, "device id 300 out of range 0..255"),
    (["--device", "0=10.0.0.1", "--peer", "x"], None, 'peer: "x" is not an IPv4 or IPv6 address'),
    (["--device", "0=10.0.0.1", "--pings", "0"], None, 'pings: "0" is not a number in 1..100'),
    (["--device", "0=10.0.0.1", "--max-loss", "101"], None,
     'max-loss: "101" is not a number in 0..100 (percent)'),
    (["--device", "0=10.0.0.1", "--timeout", "0"], None,
     'timeout: "0" is not a number in 0.001..3600 (seconds)'),
    (["--device", "0=10.0.0.1", "--timeout"], None, "--timeout needs a value"),
    (["--device", "0=10.0.0.1", "--bogus"], None, 'unknown argument "--bogus"'),
    (["--host", "a b", "--device", "0=10.0.0.1"], None, 'host name "a b" has characters'),
    (["--spec", "-", "--device", "0=10.0.0.1"], "{}",
     "--spec cannot be combined with --device (put it in the spec)"),
    (["--spec", "-"], "", "spec: empty input (expected a JSON object)"),
    (["--spec", "-"], "[]", "spec: byte 0: expected '{'"),
    (["--spec", "-"], '{"devices": []}',
     'spec: byte 0: "devices" is required and must list at least one device'),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1", "x": 1}]}',
     'spec: byte 45: unknown key "x" in a device (allowed: id, ip, sdid, pod)'),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "extra": 1}',
     'unknown key "extra" (allowed: host, devices, peers, pings, max_loss, timeout, superpod, tls, chips_per_card, roce)'),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "pings": 1e3}',
     "exponents are not accepted here"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "pings": "3"}',
     "expected a number"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}]} x',
     "unexpected data after the closing '}'"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "host": "a", "host": "b"}',
     'key "host" repeated'),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "peers": ["10.0.1.1",]}',
     "expected '\"'"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}]' + "]" * 100000,
     "spec: byte 41: expected ',' or '}'"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}]}' + "]" * 100000,
     "spec: byte 42: unexpected data after the closing '}'"),
    (["--spec", "-"], '{"devices": [' + "[" * 100000,
     "spec: byte 13: expected '{'"),
    (["--spec", "-"], '{"devices": [{"id": 0 "ip": "10.0.0.1"}]}',
     "spec: byte 22: expected ',' or '}'"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}], "host": "' + "h" * 300 + '"}',
     "string longer than"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1"}]}' + " " * (1 << 20),
     "spec: larger than 1048576 bytes"),
    (["--spec", "-"], '{"devices": [{"id": 0.5, "ip": "10.0.0.1"}]}',
     "device id must be an integer 0..255"),
    (["--spec", "-"], '{"devices": [{"id": 0, "ip": "10.0.0.1\\u0000"}]}',
     "only ASCII \\u escapes (0001..007f) are accepted"),
]


@pytest.mark.parametrize("args,stdin,message", USAGE_ERRORS,
                         ids=[str(i) for i in range(len(USAGE_ERRORS))])
def test_usage_errors(binary, tmp_path, args, stdin, message):
    proc = run(binary, args, tmp_path, stdin=stdin)
    assert proc.returncode == 2
    assert proc.stdout == ""
    first = proc.stderr.splitlines()[0]
    assert first.startswith("launcher-linkcheck: ")
    assert message in first


def test_help(binary, tmp_path):
    proc = run(binary, ["--help"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: launcher-linkcheck --device ID=EXPECTED_IP")


def malformed_outputs():
    rnd = random.Random(1234)
    return {
        "empty": b"",
        "blank": b"\n\n   \n",
        "truncated": b"link sta\npres\nipaddr\n3 packets transmitted, 2 rec",
        "random": bytes(rnd.randrange(256) for _ in range(4096)),
        "nuls": b"link status: UP\x00\npresent : pre\x00sent\nipaddr:10.0.0.\x001\n"
                b"3 packets transmitted, 3 received, 0.00\x00% packet loss\n",
        "huge_line": b"x" * (2 * 1024 * 1024) + b"\nlink status: UP\npresent : present\n",
        "huge_numbers": b"99999999999999999999 packets transmitted, 1 received, "
                        b"1e999% packet loss\nlink status:\nipaddr:\n",
        "bad_utf8": b"link status: \xff\xfe\xc3\n\xed\xa0\x80 present : \xe2\x82\n",
        "rx_over_tx": b"3 packets transmitted, 4 received, 0.00% packet loss\n",
    }


def test_malformed_tool_output(binary, tmp_path):
    outputs = malformed_outputs()
    names = sorted(outputs)
    lines = {"devices": ",".join(str(d) for d in range(len(names)))}
    devices = {}
    for dev, name in enumerate(names):
        path = tmp_path / f"{name}.out"
        path.write_bytes(outputs[name])
        devices[dev] = f"10.0.0.{dev + 1}"
        for sub in ("link", "optical", "ip", "ping"):
            lines[f"raw_{sub}.{dev}"] = str(path)
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    proc, report = run_json(binary, base_args(devices=devices, peers=["10.0.1.1"]), tmp_path,
                            scenario=text)
    assert proc.returncode == 1, proc.stderr
    assert len(report["checks"]) == 4 * len(names)
    for check in report["checks"]:
        name = names[check["device"]]
        assert check["ok"] is False, (name, check)
        assert check["state"] == "fail" and check["seen"], (name, check)
    by = {(names[c["device"]], c["check"]): c for c in report["checks"]}
    assert by["empty", "link"]["seen"] == "no output"
    assert by["empty", "link"]["evidence"] == "hccn_tool: no output"
    assert by["blank", "ip"]["evidence"] == "hccn_tool: only blank output"
    assert by["truncated", "ping"]["seen"] == 'no "packets transmitted" line in the output'
    assert by["nuls", "link"]["seen"] == "UP\\x00"
    huge = by["huge_line", "link"]
    assert huge["seen"] == 'no "link status:" line in the output'
    assert huge["raw_truncated"] is True and len(huge["raw"]) == 64 * 1024
    assert huge["evidence"].endswith('...", output truncated at 64 KiB')
    assert by["huge_numbers", "link"]["seen"] == "an empty value"
    assert by["bad_utf8", "link"]["seen"] == "\\xff\\xfe\\xc3"
    assert "\ufffd" in by["bad_utf8", "link"]["raw"]
    human = run(binary, base_args(devices=devices, peers=["10.0.1.1"]), tmp_path, scenario=text)
    assert human.returncode == 1
    assert human.stdout.splitlines()[-1] == (
        f"linkcheck: {4 * len(names)} checks, {4 * len(names)} failed")
