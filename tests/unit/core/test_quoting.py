"""Env values and argv with quotes, $(), spaces, newlines and unicode arrive byte-for-byte.

The rendered launch script is run for real by /bin/sh; the program it execs dumps what it
received. Nothing is evaluated on the way (a `$(touch ...)` must not run).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import yaml

from launcher.cli.offline import write_rendered
from launcher.core.pipeline import compile_text, rendered

NASTY = [
    "plain",
    "with space  and\ttab",
    "single ' quote and double \" quote",
    "$(touch {canary}) and `touch {canary}` and ${{HOME}} and $HOME",
    "line one\nline two\n",
    "trailing backslash \\",
    "unicode: 昇腾 NPU — ✓ ü",
    "glob * ? [a-z] ~ ; & | > <",
    "",
    "-n",
    "'",
]


def topology(canary: Path, deploy: Path, dump: Path, extra_env: dict | None = None) -> str:
    values = [v.format(canary=canary) for v in NASTY]
    env = {f"V{i}": v for i, v in enumerate(values)}
    dumper = ("import json, os, sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ), "
              "'cwd': os.getcwd()}, open(os.environ['DUMP'], 'w'))")
    doc = {
        "version": 1, "name": "quoting", "defaults": {"deploy_dir": str(deploy)},
        "hosts": [{"name": "h", "address": "127.0.0.1", "transport": "local",
                   "devices": {0: "10.213.0.9"}}],
        "instances": [{"name": "q", "hosts": ["h"], "cwd": str(deploy),
                       "command": [sys.executable, "-c", dumper] + values,
                       "env": {**env, "DUMP": str(dump), **(extra_env or {})}}],
    }
    return yaml.safe_dump(doc, allow_unicode=True)


def test_values_survive_env_file_and_launch_script(tmp_path: Path):
    canary = tmp_path / "canary"
    deploy = Path(tempfile.mkdtemp(prefix="q-", dir="/tmp"))  # short: paths must fit a unix socket
    dump = tmp_path / "dump.json"
    result = compile_text(topology(canary, deploy, dump), "quoting.yaml")
    _, files = rendered(result.plan)
    root = deploy / "quoting" / "h"
    write_rendered({"gen": files["h"]}, str(root))
    (root / "current").symlink_to("gen")
    proc = subprocess.run(["/bin/sh", str(root / "current/bin/q.sh"), "0"], capture_output=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    got = json.loads(dump.read_text(encoding="utf-8"))
    expected = [v.format(canary=canary) for v in NASTY]
    assert got["argv"] == expected
    for i, value in enumerate(expected):
        assert got["env"][f"V{i}"] == value, f"V{i}"
    assert got["env"]["RANK"] == "0" and got["env"]["WORLD_SIZE"] == "1"
    assert got["env"]["RANKTABLEFILE"] == str(root / "current/ranktables/q.json")
    assert not canary.exists(), "a value was evaluated by the shell"
    shutil.rmtree(deploy)


def test_env_file_is_private_and_values_stay_off_the_command_line(tmp_path: Path):
    text = topology(tmp_path / "c", Path("/tmp/q"), tmp_path / "dump", {"API_TOKEN": "s3cret-value"})
    _, files = rendered(compile_text(text, "t.yaml").plan)
    env = files["h"]["env/q.env"]
    script = files["h"]["bin/q.sh"]
    assert env.mode == 0o600
    assert b"s3cret-value" in env.content
    assert b"s3cret-value" not in script.content
    assert b"s3cret-value" not in files["h"]["manifest.json"].content
