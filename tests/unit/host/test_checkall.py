"""The host side of `check` in one call: every part answers, a broken part does not hide the others."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

from tests.helpers import ROOT


def _check(root: str, doc: dict) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-S", "-c",
                           f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                           "from launcher.host import hostside\nsys.exit(hostside.main(['check', sys.argv[1]]))", root],
                          input=json.dumps(doc), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_every_tcp_target_is_judged_open_reachable_or_unreachable(tmp_path):
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: the host is there, nothing listens yet
        targets = [f"127.0.0.1:{listening.getsockname()[1]}", f"127.0.0.1:{closed.getsockname()[1]}",
                   "no-such-host.invalid:29500"]
        reply = _check(str(tmp_path), {"links": [], "tcp": targets, "containers": None})
    tcp = reply["tcp"]["tcp"]
    assert list(tcp) == targets  # in the order asked
    assert tcp[targets[0]] == "open" and tcp[targets[1]] == "reachable"
    assert tcp[targets[2]].startswith("unreachable (")
    assert reply["links"] == [] and "containers" not in reply


def test_a_part_that_breaks_is_named_and_the_others_still_report(tmp_path):
    broken = [{"image": "x:1", "programs": {}, "optional_mounts": []}]  # no "engine": the part raises
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        target = f"127.0.0.1:{listening.getsockname()[1]}"
        reply = _check(str(tmp_path), {"links": [], "tcp": [target], "containers": broken})
    assert reply["containers"] == {"error": "KeyError: 'engine'"}
    assert reply["tcp"]["tcp"] == {target: "open"}


def test_a_container_spec_is_checked_against_this_host(tmp_path):
    spec = {"engine": "no-such-engine-here", "image": "x:1", "optional_mounts": [f"{tmp_path}/absent:/x"],
            "programs": {"p": {"devices": [str(tmp_path)]}}}
    reply = _check(str(tmp_path), {"links": [], "tcp": [], "containers": [spec]})
    assert reply["containers"]["problems"] == ["container engine 'no-such-engine-here' not found "
                                               "(not on PATH, or not executable)"]
    assert reply["containers"]["missing"] == [f"{tmp_path}/absent"]
