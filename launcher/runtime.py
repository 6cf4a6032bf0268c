"""The runtime shipped to hosts: the launcher's host-side code and supervisor, pure Python.

Hosts have no internet and maybe a different CPU (aarch64): we ship source packages from
the operator's own installation as one deterministic tar; the host needs only python3.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache

import importlib.util

import launcher

# Run on the host as: PATH gains runtime/current/bin, so a topology can say `launcher-demo-rank`.
WRAPPERS = {
    "launcher-demo-rank": "launcher.demo_rank",
    "launcher-agent": "launcher.agent",
}
_SKIP_DIRS = {"__pycache__", "tests"}


@dataclass(frozen=True)
class Runtime:
    id: str
    tar: bytes


def _add_package(tar: tarfile.TarFile, pkg_dir: str, arc_prefix: str) -> None:
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                _add_bytes(tar, f"{arc_prefix}/{os.path.relpath(path, pkg_dir)}", fh.read(), 0o644)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _wrapper(module: str) -> bytes:
    return (f'#!/bin/sh\nsite=$(cd "$(dirname "$0")/../site" && pwd)\n'
            f'PYTHONPATH="$site${{PYTHONPATH:+:$PYTHONPATH}}" exec python3 -m {module} "$@"\n').encode()


@lru_cache(maxsize=1)
def build_runtime() -> Runtime:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        _add_package(tar, os.path.dirname(launcher.__file__), "site/launcher")
        # find, not import, supervisor: importing it costs the CLI ~0.1 s for nothing
        _add_package(tar, os.path.dirname(importlib.util.find_spec("supervisor").origin), "site/supervisor")
        native = os.path.join(os.path.dirname(launcher.__file__), "_native")
        for name in sorted(os.listdir(native)):  # built on the host by hostside (any CPU)
            if name.endswith((".c", ".h")):
                with open(os.path.join(native, name), "rb") as fh:
                    _add_bytes(tar, f"native/{name}", fh.read(), 0o644)
        for name, module in sorted(WRAPPERS.items()):
            _add_bytes(tar, f"bin/{name}", _wrapper(module), 0o755)
    data = buf.getvalue()
    return Runtime(f"{launcher.__version__}-{hashlib.sha256(data).hexdigest()[:12]}", data)


def payload(runtime: Runtime | None, files: dict | None, secret: bytes | None) -> bytes:
    """What one host needs, as one tar: runtime/ (first time), gen/ (modes kept: 0600 env
    files stay private), secret (the agent key). One upload, one round trip."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        if runtime is not None:
            with tarfile.open(fileobj=io.BytesIO(runtime.tar), mode="r:") as rt:
                for member in rt.getmembers():
                    data = rt.extractfile(member).read()
                    _add_bytes(tar, f"runtime/{member.name}", data, member.mode)
        for path, f in (files or {}).items():
            _add_bytes(tar, f"gen/{path}", f.content, f.mode)
        if secret is not None:
            _add_bytes(tar, "secret", secret, 0o600)
    return buf.getvalue()
