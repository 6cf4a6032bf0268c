"""Bad input is refused before anything is touched: one message, exit 2, never a traceback (issue 11, §9)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli, write


def local_topology(tmp_path: Path) -> tuple[str, Path]:
    """Two local hosts; their deploy dir is where anything touched would show."""
    deploy = tmp_path / "deploy"
    text = f"""version: 1
name: flags
defaults:
  deploy_dir: {deploy}
  preflight: false
hosts:
  - {{name: a, address: 127.0.0.1, transport: local, devices: {{0: 10.0.0.1}}}}
  - {{name: b, address: 127.0.0.2, transport: local, devices: {{0: 10.0.1.1}}}}
instances:
  - {{name: x, hosts: [a, b], command: [sleep, "1000"], rendezvous_port: 29955}}
"""
    return write(tmp_path, text), deploy


@pytest.mark.parametrize("argv, message", [
    (["up", "--max-unavailable", "0"], "--max-unavailable must be at least 1"),
    (["up", "--forks", "0"], "--forks must be at least 1"),
    (["up", "--ready-timeout", "0"], "--ready-timeout must be more than 0"),
    (["up", "--ready-timeout", "nan"], "--ready-timeout must be more than 0"),
    (["restart", "--rolling", "--max-unavailable", "0"], "--max-unavailable must be at least 1"),
    (["restart", "--rolling", "--ready-timeout", "-1"], "--ready-timeout must be more than 0"),
    (["status", "--forks", "-3"], "--forks must be at least 1"),
    (["status", "--watch", "--interval", "0"], "--interval must be more than 0 seconds"),
    (["status", "--watch", "--interval", "inf"], "--interval must be more than 0 seconds"),
    (["logs", "-n", "-1"], "--lines must be at least 0"),
    (["down", "--ssh-config", "/nonexistent/ssh_config"], "--ssh-config /nonexistent/ssh_config: no such file"),
    (["check", "--known-hosts", "/nonexistent/known"], "--known-hosts /nonexistent/known: no such file"),
    (["events", "--since", "yesterday"], "--since 'yesterday': give a duration (90s, 10m, 2h, 1d)"),
    (["events", "--since", "5x"], "--since '5x': give a duration"),
    (["events", "--forks", "0"], "--forks must be at least 1"),
])
def test_every_flag_is_checked_before_a_host_is_contacted(tmp_path, argv, message):
    topo, deploy = local_topology(tmp_path)
    run = run_cli(argv[0], topo, *argv[1:])
    assert run.code == 2, run.err
    assert message in run.err
    assert "Traceback" not in run.err
    assert not deploy.exists()  # no host was reached: nothing uploaded, switched or started


def test_render_under_a_regular_file_is_refused(tmp_path):
    topo, _ = local_topology(tmp_path)
    (tmp_path / "afile").write_text("mine")
    run = run_cli("render", topo, "-o", str(tmp_path / "afile" / "out"))
    assert run.code == 2
    assert f"-o {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is not a directory" in run.err
    assert (tmp_path / "afile").read_text() == "mine"


def _pd_table(prefill: list, decode: list, sched: object = None) -> dict:
    sched = sched if sched is not None else {"server_id": "10.0.0.1", "server_ip": "10.0.0.1"}
    return {"version": "1.0", "status": "completed", "server_group_list": [
        {"group_id": "0", "server_count": "1", "server_list": [sched]},
        {"group_id": "1", "server_count": str(len(prefill)), "server_list": prefill},
        {"group_id": "2", "server_count": str(len(decode)), "server_list": decode}]}


def test_pd_merge_save_dir_naming_a_file_is_refused(tmp_path):
    table = tmp_path / "t.json"
    table.write_text(json.dumps(_pd_table([], [])))
    (tmp_path / "afile").write_text("mine")
    run = run_cli("pd-ranktable", "merge", str(table), "--save-dir", str(tmp_path / "afile"))
    assert run.code == 2, run.err
    assert f"--save-dir {tmp_path / 'afile'}: is not a directory" in run.err
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("table, message", [
    (_pd_table([5], []), "t.json: group 1 server 0: must be an object with a server_id"),
    (_pd_table([], [{"server_ip": "1.2.3.4"}]), "t.json: group 2 server 0: must be an object with a server_id"),
    (_pd_table([], [], sched="10.0.0.1"), "t.json: group 0 server 0: must be an object with a server_id"),
    ({"server_group_list": [{"group_id": "0", "server_list": [{"server_id": "a"}, {"server_id": "b"}]},
                            {"group_id": "1", "server_list": []}, {"group_id": "2", "server_list": [7]}]},
     "t.json: group 2 server 0: must be an object with a server_id"),
])
def test_pd_merge_of_a_table_with_malformed_entries_is_refused(tmp_path, table, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    run = run_cli("pd-ranktable", "merge", str(path), "--save-dir", str(tmp_path / "out"))
    assert run.code == 2, run.err
    assert message in run.err
    assert not (tmp_path / "out").exists()


def test_ssh_client_openssh_without_ssh_installed_is_refused(tmp_path):
    topo = write(tmp_path, """version: 1
name: nossh
hosts:
  - {name: a, address: 192.0.2.1, devices: {0: 10.0.0.1}}
instances:
  - {name: x, hosts: [a], command: [sleep, "1000"]}
""")
    bare = tmp_path / "bin"  # a PATH without ssh on it
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "launcher", "status", topo, "--ssh-client", "openssh"],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--ssh-client openssh: the OpenSSH client `ssh` is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("lock, message", [
    ("version: 1\ndevices:\n  a: [10.0.0.1]\n", "topo.lock.yaml:3:6: error: devices.a: must map device ids to IPs"),
    ("version: 1\ndevices:\n  a: {zero: 10.0.0.1}\n",
     "topo.lock.yaml:3:13: error: devices.a.zero: device id 'zero' is not a non-negative integer"),
])
def test_a_malformed_lock_file_is_a_message_not_a_traceback(tmp_path, lock, message):
    topo = write(tmp_path, "version: 1\nname: lk\nhosts:\n  - {name: a, address: 10.1.0.1, devices: {0: discover}}\n"
                           "instances:\n  - {name: x, hosts: [a], command: [sleep, '1']}\n")
    (tmp_path / "topo.lock.yaml").write_text(lock)
    run = run_cli("validate", topo)
    assert run.code == 2, run.err
    assert message in run.err and "Traceback" not in run.err


def test_a_recursive_yaml_alias_is_a_message_at_the_alias(tmp_path):
    topo = write(tmp_path, "version: 1\nname: rec\nx-loop: &r [1, *r]\nhosts: []\n")
    run = run_cli("validate", topo)
    assert run.code == 2, run.err
    assert f"{topo}:3:16: error: YAML: alias *r is used inside" in run.err
    assert "Traceback" not in run.err


def test_verbose_is_accepted_before_and_after_the_command(tmp_path):
    topo, _ = local_topology(tmp_path)
    from launcher.cli import build_parser
    assert build_parser().parse_args(["-v", "validate", topo]).verbose is True
    assert build_parser().parse_args(["validate", topo, "-v"]).verbose is True
    assert build_parser().parse_args(["validate", topo]).verbose is False


def test_a_directory_that_cannot_be_written_is_a_message_not_a_traceback(tmp_path):
    # /proc takes no new entries, not even from root: the checks pass (its parent is a directory)
    # and the write itself fails
    topo, _ = local_topology(tmp_path)
    run = run_cli("render", topo, "-o", "/proc/launcher-test-out")
    assert run.code == 1 and "Traceback" not in run.err
    assert "error: cannot write into /proc/launcher-test-out: /proc/launcher-test-out: " in run.err
    table = tmp_path / "t.json"
    table.write_text(json.dumps(_pd_table([], [])))
    run = run_cli("pd-ranktable", "merge", str(table), "--save-dir", "/proc/launcher-test-out")
    assert run.code == 1 and "Traceback" not in run.err
    assert "error: cannot write /proc/launcher-test-out/global_ranktable_merge.json: " in run.err


# --- issue 21: input that reached config files or tracebacks ---------------------------------
def _no_traceback(argv: list[str]) -> "object":
    try:
        return run_cli(*argv)
    except Exception as exc:  # run_cli runs main() in this process: a traceback arrives here
        pytest.fail(f"launcher {' '.join(argv)} raised {exc!r} instead of a message and exit 2")


@pytest.mark.parametrize("command", ["validate", "plan", "render", "up"])
def test_bad_strings_and_numbers_are_refused_by_every_command_before_anything_is_touched(tmp_path, command):
    topo, deploy = local_topology(tmp_path)
    text = Path(topo).read_text()
    text = text.replace(f"deploy_dir: {deploy}", f'deploy_dir: "{deploy}\\n[program:evil]\\ncommand=/bin/id"')
    text = text.replace("rendezvous_port: 29955", "rendezvous_port: 29955.0, env: {A: \"x\\0y\"}")
    Path(topo).write_text(text)
    argv = [command, topo] + (["-o", str(tmp_path / "out")] if command == "render" else [])
    run = _no_traceback(argv)
    assert run.code == 2, run.err
    lines = run.err.splitlines()
    assert lines[0] == (f"{topo}:4:15: error: defaults.deploy_dir: U+000A (line feed) at character "
                        f"{len(str(deploy)) + 1} of the value is not allowed here (rule no-control: control characters "
                        "only in env values, argv items and probe.log; this string goes into a path, a name or a "
                        "config file)")
    assert lines[1] == (f"{topo}:10:73: error: instances[0].rendezvous_port: expected integer, got number 29955.0 "
                        "(rule integer: an integer is written without a decimal point or exponent)")
    assert lines[2].startswith(f"{topo}:10:91: error: instances[0].env.A: U+0000 (NUL) at character 2 ")
    assert lines[-1] == "3 errors; nothing was changed"
    assert not deploy.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["validate", "plan", "render", "up", "status", "discover"])
def test_a_lock_file_that_is_not_utf8_is_exit_2_with_its_offset(tmp_path, command):
    topo, deploy = local_topology(tmp_path)
    Path(topo).write_text(Path(topo).read_text().replace("{0: 10.0.0.1}", "{0: discover}"))
    (tmp_path / "topo.lock.yaml").write_bytes(b"version: 1\ndevices:\n  a: {0: 10.0.0.\xff}\n")
    argv = [command, topo] + (["-o", str(tmp_path / "out")] if command == "render" else [])
    run = _no_traceback(argv)
    assert run.code == 2, run.err
    assert f"{tmp_path / 'topo.lock.yaml'}:3:17: error: not UTF-8 text: byte 0xff at byte offset 36 " \
           "(invalid start byte)" in run.err
    assert not deploy.exists()


def test_a_topology_that_is_not_utf8_is_exit_2_with_its_offset(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_bytes(b"version: 1\nname: \xc3\x28\n")
    run = _no_traceback(["plan", str(path)])
    assert run.code == 2
    assert run.err.splitlines()[0] == (f"{path}:2:7: error: not UTF-8 text: byte 0xc3 at byte offset 17 "
                                       "(invalid continuation byte)")


def test_a_pd_ranktable_that_is_not_utf8_is_exit_2_with_its_offset(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_pd_table([], [])))
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"version": "1.0",\n "status": "\xfe"}')
    run = _no_traceback(["pd-ranktable", "merge", str(good), str(bad)])
    assert run.code == 2
    assert run.err.splitlines()[0] == f"{bad}:2:13: error: not UTF-8 text: byte 0xfe at byte offset 31 " \
                                       "(invalid start byte)"


def test_a_pd_ranktable_escaping_a_lone_surrogate_is_exit_2(tmp_path):
    server = {"server_id": "\ud800", "server_ip": "10.0.0.1"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_pd_table([], [], server)))  # ensure_ascii: written as the escape \ud800
    run = _no_traceback(["pd-ranktable", "merge", str(bad)])
    assert run.code == 2
    assert run.err == f"error: {bad}: not JSON text: an escape of a lone surrogate (U+D800) names no character\n"


def test_an_instance_on_a_host_without_devices_is_refused_at_that_host(tmp_path):
    """Not a ValueError from the device rules: the host's entry in the instance is named."""
    topo = write(tmp_path, """version: 1
name: nodev
hosts:
  - {name: a, address: 10.0.0.1, devices: {0: 10.1.0.1}}
  - {name: b, address: 10.0.0.2, devices: {}}
instances:
  - name: m
    hosts: [a, b]
    command: [python3, x.py]
""")
    run = run_cli("validate", topo)
    assert run.code == 2, run.err
    assert "Traceback" not in run.err
    assert ":8:16: error: instances[0].hosts[1]: instance m: host b declares no devices" in run.err, run.err
