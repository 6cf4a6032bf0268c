"""`down` when `ssh -O exit` hangs: it ends with a warning, not a traceback or a hang (issue 11, §9).

The OpenSSH client is the boundary here (as hccn_tool is for NPUs): a fake `ssh` earlier on
PATH runs the remote command on this machine, and on `-O exit` hangs with a child that keeps
its output open, as a stuck control master would."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers import ROOT

FAKE_SSH = r"""#!/bin/sh
prev=
for a in "$@"; do
  if [ "$prev" = "-O" ] && [ "$a" = "exit" ]; then
    sleep 3600 & echo $! >> "$FAKE_SSH_PIDS"
    echo $$ >> "$FAKE_SSH_PIDS"
    exec sleep 3600
  fi
  prev=$a
done
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
exec sh -c "$1"
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_down_when_ssh_O_exit_hangs(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))  # short: ControlPath and the supervisord socket
    try:
        bindir = base / "bin"
        bindir.mkdir()
        (bindir / "ssh").write_text(FAKE_SSH)
        (bindir / "ssh").chmod(0o755)
        xdg = base / "xdg"
        (xdg / "ascend-launcher").mkdir(parents=True, mode=0o700)  # shared connections are on
        pids = base / "pids"
        topo = tmp_path / "topo.yaml"
        topo.write_text(f"""version: 1
name: sdown
defaults: {{deploy_dir: {base / 'deploy'}, preflight: false}}
hosts:
  - {{name: a, address: 127.0.0.1, devices: {{0: 10.213.220.1}}}}
instances:
  - {{name: x, hosts: [a], command: [sleep, "600"]}}
""")
        env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "XDG_RUNTIME_DIR": str(xdg),
               "FAKE_SSH_PIDS": str(pids), "PYTHONPATH": str(ROOT)}

        def cli(*argv: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "launcher", *argv, str(topo), "--ssh-client", "openssh"],
                                  capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)

        up = cli("up")
        assert up.returncode == 0, up.stderr
        down = cli("down")
        assert down.returncode == 0, down.stderr
        assert "Traceback" not in down.stderr
        assert "a: ssh -O exit did not finish in 5 s; killed it" in down.stderr
        assert "down: sdown stopped on 1 hosts" in down.stdout
        hung = [int(p) for p in pids.read_text().split()]
        assert hung and not any(_alive(p) for p in hung)  # the hung client and its child are gone
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert str(base / "deploy") not in ps  # down stopped everything of the deployment
    finally:
        subprocess.run([sys.executable, "-m", "launcher", "down", str(tmp_path / "topo.yaml"), "--purge",
                        "--ssh-client", "openssh"], capture_output=True, timeout=300,
                       env={**env, "FAKE_SSH_PIDS": "/dev/null"}, cwd=str(ROOT))
        shutil.rmtree(base, ignore_errors=True)
