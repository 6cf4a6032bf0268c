"""What an operator watches on the local demo: `status --watch` refreshing as a rank dies and comes
back, and `logs` of several ranks merged in time order. Real supervisord, real agents, real ranks.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from importlib import resources

import pytest

from tests.helpers import ROOT, health_json, run_cli, wait_for

WATCH = "Every 0.3s: launcher status"


@pytest.fixture
def demo(tmp_path):
    """The embedded local demo topology (4 ranks on 2 local "hosts"), up, every rank healthy."""
    deploy = tempfile.mkdtemp(prefix="ob-", dir="/tmp")  # short: supervisord's socket path
    text = resources.files("launcher").joinpath("examples", "demo-local.yaml").read_text(encoding="utf-8")
    path = tmp_path / "demo.yaml"
    path.write_text(text.replace("/tmp/ascend-launcher-demo", deploy))
    run = run_cli("up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: all(health_json(a, 18610 + k) for a in ("127.0.0.1", "127.0.0.2") for k in (0, 1)),
             what="the demo's 4 ranks healthy")
    yield str(path)
    run_cli("down", str(path), "--purge")
    shutil.rmtree(deploy, ignore_errors=True)


class Watch:
    """`launcher status FILE --watch` in its own process, its output collected as it comes."""

    def __init__(self, path: str, *flags: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "launcher", "status", path, "--watch",
                                      "--interval", "0.3", *flags], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()

    def frames(self) -> list[str]:
        return "".join(self.lines).split(WATCH)[1:]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C, the way out of a watch
        code = self.proc.wait(timeout=30)
        return code, self.proc.stderr.read()


def restarts(frame: str, rank: int) -> int | None:
    row = next((ln.split() for ln in frame.splitlines() if re.match(rf"demo\s+\S+\s+{rank}\s", ln)), None)
    return int(row[6]) if row and len(row) > 6 and row[6].isdigit() else None


def test_status_watch_redraws_as_a_rank_dies_and_its_gang_comes_back(demo):
    watch = Watch(demo)
    try:
        first = wait_for(lambda: watch.frames()[:2] if len(watch.frames()) >= 2 else None, what="two frames")
        assert restarts(first[0], 3) == 0 and "RUNNING" in first[0], first[0]
        victim = next(r["pid"] for r in json.loads(run_cli("status", demo, "--json").out) if r["rank"] == 3)
        os.kill(victim, signal.SIGKILL)
        # the frames follow the gang: the rank restarted (its count is 1), running again and answering
        # its probe (RUNNING comes first: on a busy machine a frame may show it "not ready" a while)
        wait_for(lambda: any(restarts(f, 3) == 1 and f.count("RUNNING") == 4 and "not ready" not in f
                             for f in watch.frames()[2:]),
                 timeout=60, what="a frame with rank 3 restarted once and all 4 ranks running and ready")
    finally:
        code, err = watch.stop()
    assert code == 0, err  # the last frame: every rank runs and answers its probe
    assert "Traceback" not in err and "interrupted" not in err
    assert "\x1b[2J" not in "".join(watch.lines)  # into a pipe: frames one after another, no screen codes


def test_status_watch_json_is_one_array_per_frame_for_scripts(demo):
    watch = Watch(demo, "--json")
    try:
        wait_for(lambda: len(watch.lines) >= 3, what="three JSON frames")
    finally:
        code, err = watch.stop()
    frames = [json.loads(line) for line in watch.lines]
    assert code == 0, err
    assert all(sorted(r["rank"] for r in f) == [0, 1, 2, 3] for f in frames)


def test_logs_of_an_instance_merge_its_ranks_in_time_order(demo):
    run = run_cli("logs", demo, "--instance", "demo", "-n", "20")
    assert run.code == 0, run.err
    lines = [ln for ln in run.out.splitlines() if ln]
    prefixes = {ln.split("| ", 1)[0] for ln in lines}
    assert prefixes == {"node-a/demo-r0", "node-a/demo-r1", "node-b/demo-r2", "node-b/demo-r3"}
    stamps = [m.group(0) for ln in lines if (m := re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", ln.split("| ", 1)[1]))]
    assert len(stamps) >= 8 and stamps == sorted(stamps)  # the four ranks' lines interleaved by their stamps
    # each rank's own lines in their own order
    for p in prefixes:
        own = [ln for ln in lines if ln.startswith(p + "| ")]
        per_rank = run_cli("logs", demo, "--host", p.split("/")[0], "--rank", p.rsplit("r", 1)[1], "-n", "20")
        assert [ln for ln in per_rank.out.splitlines() if ln] == own


def test_status_watch_on_a_terminal_redraws_the_screen_like_watch(demo):
    import pty
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "status", demo, "--watch", "--interval", "0.3"],
                            cwd=ROOT, stdout=sub, stderr=subprocess.PIPE)
    os.close(sub)
    seen = b""
    try:
        while seen.count(b"\x1b[H\x1b[2J") < 2:  # two frames, each drawn on a cleared screen
            seen += os.read(main, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        os.close(main)
    assert code == 0
    assert seen.split(b"\x1b[H\x1b[2J")[1].startswith(WATCH.encode())
