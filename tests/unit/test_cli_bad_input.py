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
    (["logs", "-n", "-1"], "--lines must be at least 0"),
    (["down", "--ssh-config", "/nonexistent/ssh_config"], "--ssh-config /nonexistent/ssh_config: no such file"),
    (["check", "--known-hosts", "/nonexistent/known"], "--known-hosts /nonexistent/known: no such file"),
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
