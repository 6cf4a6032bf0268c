"""The runtime shipped to hosts: the launcher's host-side code and supervisor, pure Python.

Hosts have no internet and maybe a different CPU (aarch64): we ship source packages from
the operator's own installation (of the launcher, only the modules a host runs); the host
needs only python3. On the host the runtime is three files, not a tree: ``site.zip`` (the
packages, imported from the zip by Python's zipimport), and the two ``bin/`` wrappers. Every
file a cold `up` creates costs each host a create under the file system's journal, which was
most of a cold host's time (about 15 ms a file with 16 hosts deploying at once on the testbed).

Its id is a hash of the source files (cheap: every command needs it); the zip is built only
when a host lacks it, with bytecode compiled here (unchecked hash-based pycs beside each
module, where zipimport looks first), and kept in the user's cache dir for the next `up`. A
host whose Python has another bytecode magic recompiles the pycs once when it installs the
runtime (remote.BOOTSTRAP); until then zipimport would fall back to the sources.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import marshal
import os
import sys
import tarfile
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Callable, Mapping

import launcher

from ..core.plan import File

# Run on the host as: PATH gains runtime/current/bin, so a topology can say `launcher-demo-rank`.
WRAPPERS = {
    "launcher-demo-rank": "launcher.host.demo_rank",
    "launcher-agent": "launcher.host.agent",
}
# What of the launcher package a host runs: the package's __init__ (its version) and the whole
# of launcher/host (the bootstrap's actions, the agent, the demo rank, the systemd unit, and the
# link checker's C source, built on the host for its CPU). The rest (CLI, rendering, validation,
# SSH) is operator-side: not shipping it keeps the upload and our pyc compile small.
# tests/unit/test_boundaries.py checks that launcher/host imports nothing else of the package.
HOST_PACKAGE = "host"
# ... and these pure modules of the core, which the host side imports to build what the operator
# side builds from the same code: the rendezvous of Kubernetes pods writes the ranktable `launcher
# render` would (host/rendezvous.py). They import nothing but each other and the stdlib
# (tests/unit/test_boundaries.py holds both rules).
SHARED_CORE = ("__init__.py", "errors.py", "jsonfmt.py", "ranktable.py", "ranktable_v12.py")
_SKIP_DIRS = {"__pycache__", "tests"}
# Of supervisor, supervisord runs with neither its web UI (it is reached over a unix socket, by
# XML-RPC only), nor the sample config and scripts.
SUPERVISOR_SKIP = ("ui", "skel", "scripts")
# ... and these modules are kept (supervisorctl to look around on a host) but never imported by
# supervisord, hostside or the agent: no pyc for them.
NO_PYC = {"supervisor/supervisorctl.py", "supervisor/pidproxy.py", "supervisor/confecho.py",
          "supervisor/childutils.py", "supervisor/http_client.py"}
SITE = "site.zip"
# The zip's comment says for which bytecode its pycs are: the host compares it with its own.
MAGIC_TAG = b"ascend-launcher pyc-magic="
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
    # The runtime's physical dir (cd -P: not through runtime/current, which a later runtime
    # takes over while this process still imports from its own zip); no dirname, no exec.
    # The zip replaces sys.path[0], which `python3 -m` would make the cwd (a rank's cwd with a
    # launcher/ directory in it would shadow the runtime's package); -P does that only from 3.11.
    run = (f"import runpy,sys; sys.path[0]=sys.argv.pop(1); "
           f"runpy.run_module('{module}', run_name='__main__', alter_sys=True)")
    return (f'#!/bin/sh\nrt=$(cd -P "${{0%/*}}/.." && pwd)\n'
            f'exec python3 -c "{run}" "$rt/{SITE}" "$@"\n').encode()


def _pyc(name: str, source: bytes, magic: bytes = importlib.util.MAGIC_NUMBER) -> bytes | None:
    """An unchecked hash-based pyc (PEP 552), to lie beside its source in the zip."""
    try:
        code = compile(source, name, "exec", dont_inherit=True)
    except SyntaxError:
        return None
    return magic + (0b01).to_bytes(4, "little") + importlib.util.source_hash(source) + marshal.dumps(code)


# supervisor reads its version from a file beside options.py, which a zip has no path for; the
# shipped options.py says the version instead (checked at build, tests/unit/test_runtime.py).
_SUPERVISOR_VERSION_READ = b"VERSION = _read_version_txt()\n"


def _patch_supervisor(name: str, data: bytes, version: bytes) -> bytes:
    if name != "supervisor/options.py":
        return data
    if data.count(_SUPERVISOR_VERSION_READ) != 1:
        raise RuntimeError("this supervisor's options.py no longer reads version.txt the way the launcher "
                           "expects (launcher/deploy/runtime.py, _patch_supervisor): it cannot run from a zip")
    return data.replace(_SUPERVISOR_VERSION_READ, b"VERSION = %r\n" % version.strip().decode())


def site_zip(entries: list[tuple[str, bytes]], magic: bytes = importlib.util.MAGIC_NUMBER) -> bytes:
    """A stored (uncompressed: zipimport then needs no zlib) zip of ``entries`` with a pyc
    beside every module that supervisord, hostside, the agent or a rank imports."""
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
            if name.endswith(".py") and name not in NO_PYC:
                compiled = _pyc(name, data, magic)
                if compiled is not None:
                    zf.writestr(zipfile.ZipInfo(name + "c", (1980, 1, 1, 0, 0, 0)), compiled)
        zf.comment = MAGIC_TAG + magic.hex().encode()
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _cache_file(runtime_id: str) -> str:
    """Where the compiled runtime is kept: the user's cache dir, one file per runtime id (a hash
    of the sources) and interpreter (the pycs are its bytecode), checked by its sha256 on read."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = f"{sys.implementation.cache_tag}-{importlib.util.MAGIC_NUMBER.hex()}"
    return os.path.join(base, "ascend-launcher", f"runtime-{runtime_id}-{tag}.tar.gz")


@dataclass(frozen=True)
class Runtime:
    id: str
    # site/ members (path in the zip, content) and the other files of the runtime (path, content, mode)
    site: tuple[tuple[str, bytes], ...] = field(repr=False)
    files: tuple[Entry, ...] = field(repr=False)

    @cached_property
    def zip(self) -> bytes:
        return site_zip(list(self.site))

    @cached_property
    def packed(self) -> bytes:
        """What a host without this runtime is sent: its files (site.zip, bin/) as tar members
        under runtime/, without the end-of-archive blocks, in one gzip member. The host's upload
        is these bytes followed by its own generation's tar; the bootstrap inflates the first part
        (a third of the bytes to send, which counts on an operator's uplink to hundreds of hosts;
        the zip inside stays stored, so no import ever inflates). Compiling the pycs and
        compressing is most of a cold `up`'s CPU here and every host waits for it: so it is kept
        on disk, per runtime id and interpreter (_cache_file)."""
        path = _cache_file(self.id)
        try:
            with open(path, "rb") as fh:
                digest, data = fh.read(32), fh.read()
            if hashlib.sha256(data).digest() == digest:
                return data
        except OSError:
            pass
        buf = io.BytesIO()
        tar = tarfile.TarFile(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
        for name, body, mode in [(SITE, self.zip, 0o644), *self.files]:
            _add(tar, f"runtime/{name}", body, mode)
        # members are written as added; close() would add the trailer. mtime 0: the same bytes every time
        data = gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)
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

    @property
    def members(self) -> bytes:
        """The tar members of ``packed``, inflated (what the bootstrap reads)."""
        return gzip.decompress(self.packed)

    @property
    def tar(self) -> bytes:
        """The runtime alone as a whole upload (for `install-runtime`): packed, then the end of the tar."""
        return self.packed + b"\0" * 1024


@lru_cache(maxsize=1)
def build_runtime() -> Runtime:
    pkg = os.path.dirname(launcher.__file__)
    with open(os.path.join(pkg, "__init__.py"), "rb") as fh:
        site = [("launcher/__init__.py", fh.read())]
    host = os.path.join(pkg, HOST_PACKAGE)
    site += [(n, d) for n, d, _ in _package_files(host, f"launcher/{HOST_PACKAGE}")]
    for name in SHARED_CORE:
        with open(os.path.join(pkg, "core", name), "rb") as fh:
            site.append((f"launcher/core/{name}", fh.read()))
    native = os.path.join(host, "_native")  # a link to the repo's native/ in a source checkout
    for name in sorted(os.listdir(native)):  # the C sources only: built on the host (any CPU)
        if name.endswith((".c", ".h")):
            with open(os.path.join(native, name), "rb") as fh:
                site.append((f"launcher/{HOST_PACKAGE}/_native/{name}", fh.read()))
    # find, not import, supervisor: importing it costs the CLI ~0.1 s for nothing
    spec = importlib.util.find_spec("supervisor")
    if spec is None or spec.origin is None:
        raise RuntimeError("supervisor is not installed: the runtime ships it to every host")
    sup_dir = os.path.dirname(spec.origin)
    sup = _package_files(sup_dir, "supervisor", lambda rel: rel.split(os.sep, 1)[0] not in SUPERVISOR_SKIP)
    version = next(d for n, d, _ in sup if n == "supervisor/version.txt")
    site += [(n, _patch_supervisor(n, d, version)) for n, d, _ in sup]
    files = [(f"bin/{name}", _wrapper(module), 0o755) for name, module in sorted(WRAPPERS.items())]
    h = hashlib.sha256()
    for name, data, mode in [(n, d, 0o644) for n, d in site] + files:
        h.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return Runtime(f"{launcher.__version__}-{h.hexdigest()[:12]}", tuple(site), tuple(files))


def payload(runtime: Runtime | None, files: Mapping[str, File] | None, secret: bytes | None) -> bytes:
    """What one host needs, as one tar: runtime/ (first time, gzipped: Runtime.packed), gen/
    (modes kept: 0600 env files stay private), secret (the agent key). One upload, one round trip."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for path, f in (files or {}).items():
            _add(tar, f"gen/{path}", f.content, f.mode)
        if secret is not None:
            _add(tar, "secret", secret, 0o600)
    return (runtime.packed if runtime is not None else b"") + buf.getvalue()
