"""The runtime shipped to hosts: the launcher's host-side code and supervisor, pure Python.

Hosts have no internet and maybe a different CPU (aarch64): we ship source packages from
the operator's own installation (of the launcher, only the modules a host runs); the host
needs only python3. Its id is a hash of the files (cheap: every command needs it); the tar is
built only when a host lacks it, with bytecode compiled here (hash-based, unchecked pycs: a
host whose Python matches ours skips compiling supervisor on its first start; any other host
ignores them and compiles itself), and kept in the user's cache dir for the next `up`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import marshal
import os
import sys
import tarfile
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable

import launcher

# Run on the host as: PATH gains runtime/current/bin, so a topology can say `launcher-demo-rank`.
WRAPPERS = {
    "launcher-demo-rank": "launcher.demo_rank",
    "launcher-agent": "launcher.agent",
}
# What of the launcher package a host runs: the bootstrap's hostside, the agent (supervisord's
# event listener), the demo rank, and the systemd unit. The rest (CLI, rendering, validation)
# is operator-side: not shipping it keeps the upload, its extraction and our pyc compile small.
# tests/unit/test_runtime.py checks that these import nothing else of the package.
HOST_MODULES = ("__init__.py", "hostside.py", "agent.py", "demo_rank.py")
HOST_DIRS = ("systemd",)
_SKIP_DIRS = {"__pycache__", "tests"}
# Of supervisor, supervisord runs with neither its web UI (it is reached over a unix socket, by
# XML-RPC only), nor the sample config and scripts: every file costs each host a create.
SUPERVISOR_SKIP = ("ui", "skel", "scripts")
# ... and these modules are kept (supervisorctl to look around on a host) but never imported by
# supervisord, hostside or the agent: no pyc for them.
NO_PYC = {"site/supervisor/supervisorctl.py", "site/supervisor/pidproxy.py", "site/supervisor/confecho.py",
          "site/supervisor/childutils.py", "site/supervisor/http_client.py"}
Entry = tuple[str, bytes, int]  # archive name, content, mode


def _package_files(pkg_dir: str, arc_prefix: str, keep: Callable[[str], bool] = lambda rel: True) -> list[Entry]:
    out = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")) or not keep(os.path.relpath(os.path.join(dirpath, name), pkg_dir)):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out.append((f"{arc_prefix}/{os.path.relpath(path, pkg_dir)}", fh.read(), 0o644))
    return out


def _wrapper(module: str) -> bytes:
    return (f'#!/bin/sh\nsite=$(cd "$(dirname "$0")/../site" && pwd)\n'
            f'PYTHONPATH="$site${{PYTHONPATH:+:$PYTHONPATH}}" exec python3 -m {module} "$@"\n').encode()


def _pyc(name: str, source: bytes) -> Entry | None:
    """An unchecked hash-based pyc (PEP 552) for this interpreter's cache tag."""
    try:
        code = compile(source, name, "exec", dont_inherit=True)
    except SyntaxError:
        return None
    head, tail = os.path.split(name)
    data = (importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little") + importlib.util.source_hash(source)
            + marshal.dumps(code))
    return (f"{head}/__pycache__/{tail[:-3]}.{sys.implementation.cache_tag}.pyc", data, 0o644)


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _host_side(rel: str) -> bool:
    return rel in HOST_MODULES or rel.split(os.sep, 1)[0] in HOST_DIRS


def _cache_file(runtime_id: str) -> str:
    """Where the compiled runtime is kept: the user's cache dir, one file per runtime id (a hash
    of the sources) and interpreter (the pycs are its bytecode), checked by its sha256 on read."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = f"{sys.implementation.cache_tag}-{importlib.util.MAGIC_NUMBER.hex()}"
    return os.path.join(base, "ascend-launcher", f"runtime-{runtime_id}-{tag}.tar")


@dataclass(frozen=True)
class Runtime:
    id: str
    entries: tuple[Entry, ...] = field(repr=False)

    @cached_property
    def members(self) -> bytes:
        """The runtime as tar members under runtime/ without the end-of-archive blocks, built once:
        each host's upload is these bytes followed by its own generation's tar. Compiling the pycs
        is most of a cold `up`'s CPU here, and every host waits for it: it is kept on disk, per
        runtime id and interpreter (see _cache_file)."""
        path = _cache_file(self.id)
        try:
            with open(path, "rb") as fh:
                digest, data = fh.read(32), fh.read()
            if hashlib.sha256(data).digest() == digest:
                return data
        except OSError:
            pass
        data = self._compile_members()
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(hashlib.sha256(data).digest() + data)
            os.replace(tmp, path)
            for name in os.listdir(os.path.dirname(path)):  # older launcher versions': one is enough
                if name.startswith("runtime-") and name != os.path.basename(path):
                    os.unlink(os.path.join(os.path.dirname(path), name))
        except OSError:
            pass  # no cache then (read-only home): the next run compiles again
        return data

    def _compile_members(self) -> bytes:
        buf = io.BytesIO()
        tar = tarfile.TarFile(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
        for name, data, mode in self.entries:
            _add(tar, f"runtime/{name}", data, mode)
            if name.endswith(".py") and name.startswith("site/") and name not in NO_PYC:
                pyc = _pyc(name, data)
                if pyc:
                    _add(tar, f"runtime/{pyc[0]}", pyc[1], pyc[2])
        return buf.getvalue()  # members are written as added; close() would add the trailer

    @cached_property
    def tar(self) -> bytes:
        """The runtime alone as a tar (for `install-runtime`)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
            for name, data, mode in self.entries:
                _add(tar, name, data, mode)
        return buf.getvalue()


@lru_cache(maxsize=1)
def build_runtime() -> Runtime:
    pkg = os.path.dirname(launcher.__file__)
    entries = _package_files(pkg, "site/launcher", _host_side)
    # find, not import, supervisor: importing it costs the CLI ~0.1 s for nothing
    entries += _package_files(os.path.dirname(importlib.util.find_spec("supervisor").origin), "site/supervisor",
                              lambda rel: rel.split(os.sep, 1)[0] not in SUPERVISOR_SKIP)
    native = os.path.join(pkg, "_native")
    for name in sorted(os.listdir(native)):  # built on the host by hostside (any CPU)
        if name.endswith((".c", ".h")):
            with open(os.path.join(native, name), "rb") as fh:
                entries.append((f"native/{name}", fh.read(), 0o644))
    entries += [(f"bin/{name}", _wrapper(module), 0o755) for name, module in sorted(WRAPPERS.items())]
    h = hashlib.sha256()
    for name, data, mode in entries:
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return Runtime(f"{launcher.__version__}-{h.hexdigest()[:12]}", tuple(entries))


def payload(runtime: Runtime | None, files: dict | None, secret: bytes | None) -> bytes:
    """What one host needs, as one tar: runtime/ (first time), gen/ (modes kept: 0600 env
    files stay private), secret (the agent key). One upload, one round trip."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for path, f in (files or {}).items():
            _add(tar, f"gen/{path}", f.content, f.mode)
        if secret is not None:
            _add(tar, "secret", secret, 0o600)
    return (runtime.members if runtime is not None else b"") + buf.getvalue()
