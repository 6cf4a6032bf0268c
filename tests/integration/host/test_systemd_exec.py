"""The systemd unit's ExecStart, run as systemd would run it (specifiers filled in, `$$` as `$`),
starts supervisord from the runtime's own site.zip on a deployment root."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

from launcher.deploy.runtime import build_runtime
from tests.helpers import ROOT, wait_for

UNIT = ROOT / "launcher" / "host" / "systemd" / "ascend-launcher@.service"  # the one shipped to hosts


def exec_start(root: str, key: str = "ExecStart=") -> list[str]:
    line = next(ln for ln in UNIT.read_text().splitlines() if ln.startswith(key))
    # what systemd does with it: %f is the instance's path, $$ a literal $, then split like a shell
    return shlex.split(line[len(key):].replace("%f", root).replace("$$", "$"))


def test_exec_start_runs_supervisord_from_its_own_runtime_zip():
    rt = build_runtime()
    root = Path(tempfile.mkdtemp(prefix="lt-unit-", dir="/tmp"))  # short: a unix socket path is short
    (root / "runtime" / rt.id).mkdir(parents=True)
    (root / "runtime" / rt.id / "site.zip").write_bytes(rt.zip)
    (root / "runtime" / "current").symlink_to(rt.id)
    (root / "gens" / "g1").mkdir(parents=True)
    (root / "current").symlink_to("gens/g1")
    (root / "run").mkdir(mode=0o700)
    (root / "gens" / "g1" / "supervisord.conf").write_text(
        f"[unix_http_server]\nfile={root}/run/supervisor.sock\nchmod=0700\n\n"
        f"[supervisord]\nlogfile={root}/supervisord.log\npidfile={root}/run/supervisord.pid\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n")
    argv = exec_start(str(root))
    assert argv[0] == "/bin/sh"
    argv[0] = "sh"  # what matters is the command line, not which sh
    proc = subprocess.Popen(argv, env={"PATH": os.environ["PATH"]}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (root / "run" / "supervisor.sock").exists() or proc.poll() is not None,
                 what="supervisord's socket")
        assert proc.poll() is None, proc.stdout.read().decode()
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")  # sh exec'd python3
        assert f"PYTHONPATH={root}/runtime/{rt.id}/site.zip".encode() in environ
        assert b"-m\0launcher.host.supervisord\0--nodaemon" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(root)])


def test_exec_start_pre_stops_what_a_dead_supervisord_of_the_root_left():
    rt = build_runtime()
    root = Path(tempfile.mkdtemp(prefix="lt-unit-", dir="/tmp"))
    (root / "runtime" / rt.id).mkdir(parents=True)
    (root / "runtime" / rt.id / "site.zip").write_bytes(rt.zip)
    (root / "runtime" / "current").symlink_to(rt.id)
    (root / "run").mkdir(mode=0o700)
    # a rank as supervisord started it (own process group, its marker), its supervisord gone
    env = {"PATH": os.environ["PATH"], "SUPERVISOR_SERVER_URL": f"unix://{root}/run/supervisor.sock",
           "SUPERVISOR_PROCESS_NAME": "demo-r0", "SUPERVISOR_GROUP_NAME": "demo"}
    orphan = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        argv = exec_start(str(root), "ExecStartPre=")
        argv[0] = "sh"
        done = subprocess.run(argv, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert orphan.wait(timeout=30) == -signal.SIGTERM
        assert stranger.poll() is None
    finally:
        for p in (orphan, stranger):
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", str(root)])
