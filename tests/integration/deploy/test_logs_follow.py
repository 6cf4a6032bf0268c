"""`logs -f -n 3` prints the last 3 lines, then each new line once (issue 11, §9: it printed old
lines again on every poll). Local transport, real supervisord."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.helpers import ROOT, run_cli, wait_for


def test_logs_follow_prints_each_line_once(tmp_path):
    deploy = Path(tempfile.mkdtemp(prefix="lf-", dir="/tmp"))  # short: supervisord's socket is under it
    topo = tmp_path / "topo.yaml"
    topo.write_text(f"""version: 1
name: follow
defaults: {{deploy_dir: {deploy}, preflight: false}}
hosts:
  - {{name: a, address: 127.0.0.1, transport: local, devices: {{0: 10.213.210.1}}}}
instances:
  - name: x
    hosts: [a]
    command: [sh, -c, 'i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.1; done']
""")
    proc = None
    try:
        up = run_cli("up", str(topo))
        assert up.code == 0, up.err
        log = deploy / "follow" / "a" / "logs" / "x-r0.log"
        wait_for(lambda: log.exists() and log.read_text().count("\n") >= 10, what="10 ticks in the log")
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", str(topo), "-f", "-n", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        wait_for(lambda: len(seen) >= 40, what="40 lines from logs -f")  # several polls' worth
        ticks = [int(m.group(1)) for line in list(seen)
                 if (m := re.fullmatch(r"a/x-r0\| tick (\d+)\n", line))]
        assert len(ticks) == len(seen[:len(ticks)]) >= 40, seen[:10]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks  # each once, in order
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        run_cli("down", str(topo), "--purge")
        shutil.rmtree(deploy, ignore_errors=True)
