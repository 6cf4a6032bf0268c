"""What a host keeps on disk survives damage and concurrency: a generation that no longer matches
its digest is not switched to and is uploaded again; two runtime installs, or two builds of the
link checker, at once on one host both succeed (the bootstrap and the host code for real, as
separate processes, on this machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from launcher.deploy.remote import BOOTSTRAP
from launcher.deploy.runtime import build_runtime
from launcher.host import upload
from launcher.host.actions import act_switch

AT_ONCE = 6  # processes started together; one round of them failed every time before the fix


def _files() -> list[upload.File]:
    return [("gen/bin/model.sh", 0o755, b"#!/bin/sh\nexec model\n" * 50),
            ("gen/env/model.env", 0o600, b"MODEL=1\n"), ("gen/manifest.json", 0o644, b'{"programs": []}')]


def test_a_truncated_generation_is_installed_again_and_never_switched_to(tmp_path):
    root = tmp_path / "root"
    gen = root / "gens" / "g1"
    assert upload.install_dir(_files(), "gen", str(gen)) is True
    assert upload.install_dir(_files(), "gen", str(gen)) is False  # intact: kept as it is
    want = upload.digest([(n[4:], m, b) for n, m, b in _files()])
    assert upload.intact(str(gen), want)
    with open(gen / "bin" / "model.sh", "r+b") as fh:  # what a power loss after the rename can leave
        fh.truncate(7)
    assert not upload.intact(str(gen), want)
    with pytest.raises(RuntimeError, match="generation g1 here does not match its digest"):
        act_switch(str(root), ["g1", "rt", f"--digest={want}"])
    assert not (root / "current").exists() and not (root / "runtime").exists()  # nothing was switched
    assert upload.install_dir(_files(), "gen", str(gen)) is True  # uploaded again, not trusted
    assert (gen / "bin" / "model.sh").read_bytes() == _files()[0][2]
    assert (gen / "env" / "model.env").stat().st_mode & 0o777 == 0o600
    assert upload.intact(str(gen), want)
    assert sorted(p.name for p in gen.parent.iterdir()) == ["g1"]  # no temp or damaged copy left


def _bootstrap(root: Path, action: str, stdin: bytes = b"", *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(root), build_runtime().id, action,
                           *args], input=stdin, capture_output=True)


def test_concurrent_runtime_installs_on_one_host_all_succeed(tmp_path):
    tar = build_runtime().tar
    for round_ in range(2):
        root = tmp_path / f"root{round_}"
        # all started, each waiting for its upload on stdin; then the uploads go out together,
        # so the installs overlap (as two `up`s or `check`s on a cold host do)
        procs = [subprocess.Popen([sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(root), build_runtime().id,
                                   "install-runtime"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for _ in range(AT_ONCE)]
        with ThreadPoolExecutor(AT_ONCE) as pool:
            outs = list(pool.map(lambda p: p.communicate(tar, timeout=120), procs))
        for proc, (out, err) in zip(procs, outs):
            assert proc.returncode == 0, err.decode()
            assert json.loads(out) == {"runtime": build_runtime().id}
        runtimes = root / "runtime"
        assert [p.name for p in runtimes.iterdir()] == [build_runtime().id]  # one, no temp dir left
        assert (runtimes / build_runtime().id / "site.zip").stat().st_size > 0


BUILD = """
import sys
sys.path.insert(0, sys.argv[1])
from launcher.host.linkcheck import linkcheck_binary
print(linkcheck_binary(sys.argv[2]))
"""


@pytest.mark.skipif(not any(os.access(os.path.join(d, "cc"), os.X_OK)
                            for d in os.environ.get("PATH", "").split(os.pathsep)), reason="no C compiler")
def test_concurrent_preflight_builds_of_the_link_checker_all_succeed(tmp_path):
    for round_ in range(2):
        root = tmp_path / f"root{round_}"
        assert _bootstrap(root, "install-runtime", build_runtime().tar).returncode == 0
        site = root / "runtime" / build_runtime().id / "site.zip"

        def build(_: int) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-I", "-S", "-c", BUILD, str(site), str(root)],
                                  capture_output=True, text=True)
        with ThreadPoolExecutor(AT_ONCE) as pool:
            procs = list(pool.map(build, range(AT_ONCE)))
        for proc in procs:
            assert proc.returncode == 0, proc.stderr
        binary = Path(procs[0].stdout.strip())
        assert {p.stdout.strip() for p in procs} == {str(binary)} and os.access(binary, os.X_OK)
        assert [p.name for p in binary.parent.iterdir()] == [binary.name]  # no temp file or sources left
        check = subprocess.run([str(binary), "--help"], capture_output=True)
        assert check.returncode in (0, 2), check.stderr  # a whole program, not a half-written one
