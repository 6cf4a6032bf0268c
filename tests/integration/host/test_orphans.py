"""orphans.py against real processes: found by ROOT's supervisord marker in their environment only,
stopped with their process group (a rank's children), the scanner itself never."""
from __future__ import annotations

import os
import subprocess
import sys

from launcher.host.orphans import find_orphans, stop_orphans


def spawn(root: str | None, *, child: bool = False) -> subprocess.Popen:
    """A process as supervisord starts one (own process group, the marker in its environment);
    with ``child`` it starts a child of its own first, which inherits both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    if root is not None:
        env.update(SUPERVISOR_SERVER_URL=f"unix://{root}/run/supervisor.sock", SUPERVISOR_PROCESS_NAME="demo-r0",
                   SUPERVISOR_GROUP_NAME="demo", SUPERVISOR_ENABLED="1")
    code = ("import subprocess, sys, time\n"
            + ("c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\nprint(c.pid, flush=True)\n"
               if child else "print(0, flush=True)\n")
            + "time.sleep(600)\n")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_orphans_are_found_by_marker_and_stopped_with_their_group(tmp_path):
    root, other = str(tmp_path / "a"), str(tmp_path / "b")
    os.makedirs(os.path.join(root, "run"))
    mine, theirs, plain = spawn(root, child=True), spawn(other), spawn(None)
    try:
        grandchild = int(mine.stdout.readline())
        theirs.stdout.readline()
        plain.stdout.readline()
        found = find_orphans(root)
        assert sorted(o["pid"] for o in found) == sorted([mine.pid, grandchild])
        assert {(o["name"], o["group"], o["pgid"]) for o in found} == {("demo-r0", "demo", mine.pid)}
        assert stop_orphans(root) == found
        mine.wait(timeout=30)
        assert find_orphans(root) == []
        assert not os.path.exists(f"/proc/{grandchild}") or open(f"/proc/{grandchild}/stat").read().split()[2] == "Z"
        assert theirs.poll() is None and plain.poll() is None  # another root's, and a stranger: untouched
    finally:
        for p in (mine, theirs, plain):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_scanner_never_finds_itself(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, "run"))
    code = ("import json, sys; from launcher.host.orphans import find_orphans; "
            "print(json.dumps(find_orphans(sys.argv[1])))")
    env = {**os.environ, "SUPERVISOR_SERVER_URL": f"unix://{root}/run/supervisor.sock"}
    out = subprocess.run([sys.executable, "-c", code, root], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_supervisord_start_scans_for_orphans_only_where_one_died(tmp_path):
    """The scan reads every process's environment: start_supervisord runs it only where a dead
    supervisord left its pidfile or socket (a clean stop removed both, and swept what escaped)."""
    from launcher.host.supervisord import died_here
    root = tmp_path / "r"
    (root / "run").mkdir(parents=True)
    assert not died_here(str(root))  # blank, or cleanly stopped
    (root / "run" / "supervisor.sock").symlink_to("gone")  # a socket left behind (lexists)
    assert died_here(str(root))
    (root / "run" / "supervisor.sock").unlink()
    (root / "run" / "supervisord.pid").write_text("4242\n")  # killed: its pidfile stays
    assert died_here(str(root))
