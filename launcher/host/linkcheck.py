"""The preflight link checker on this host: built from the shipped C source for its CPU, then run."""
from __future__ import annotations

import json
import os

from . import upload

LINKCHECK = "launcher-linkcheck"


def linkcheck_binary(root: str) -> str:
    """The checker for this host's CPU: built here from the shipped C source, once per runtime."""
    import shutil
    import subprocess
    # the runtime this code was loaded from (runtime/<id>/site.zip/launcher/host/linkcheck.py):
    # the new runtime is checked before it becomes current
    rt = os.path.abspath(__file__)
    for _ in range(4):
        rt = os.path.dirname(rt)
    native = os.path.join(rt, "native")
    binary = os.path.join(native, "build", LINKCHECK)
    if os.access(binary, os.X_OK):
        return binary
    cc = next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise RuntimeError(f"cannot build {LINKCHECK}: no C compiler (cc, gcc or clang) on this host; "
                           f"install one, or put a prebuilt {LINKCHECK} for {os.uname().machine} at {binary}")
    import fcntl
    import tempfile
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    # one build at a time per runtime (two preflight checks may run here at once), each from its
    # own copy of the sources: none rewrites what another compiles
    lock = os.open(os.path.dirname(binary), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(binary, os.X_OK):  # built by the other one meanwhile
            return binary
        with tempfile.TemporaryDirectory(prefix="src-", dir=os.path.dirname(binary)) as private:
            sources = _native_sources(private)
            tmp = f"{binary}.tmp-{os.getpid()}"
            # No -Werror here: a newer compiler's new warning must not break a host.
            proc = subprocess.run([cc, "-std=c99", "-D_GNU_SOURCE", "-O2", "-pthread", "-o", tmp, *sources, "-ldl"],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"building {LINKCHECK} failed: {proc.stderr.strip().splitlines()[-1:]}")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, binary)
    finally:
        os.close(lock)
    return binary


def _native_sources(into: str) -> list[str]:
    """The C sources, written out of site.zip into ``into`` (only here: most hosts never build)."""
    import zipfile
    # mypy does not model a module's __loader__ (a zipimporter, with .archive, when run from site.zip)
    archive = getattr(__loader__, "archive", None)  # type: ignore[name-defined]
    if archive is None:  # run from a source tree
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native")
        return sorted(os.path.join(src, n) for n in os.listdir(src) if n.endswith(".c"))
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith("launcher/host/_native/") and name.endswith((".c", ".h")):
                with open(os.path.join(into, os.path.basename(name)), "wb") as fh:
                    fh.write(zf.read(name))
    return sorted(os.path.join(into, n) for n in os.listdir(into) if n.endswith(".c"))


def act_linkcheck(root: str, args: list[str]) -> dict:
    """Run the link checker with the JSON spec on stdin; args: HCCN_TOOL and DCMI_LIB paths, '-' for the default."""
    return run_linkcheck(root, args, upload.read_stdin())


def run_linkcheck(root: str, args: list[str], spec: bytes) -> dict:
    """The link checker on ``spec`` (JSON): its exit code, its report, the end of its stderr."""
    import subprocess
    env = dict(os.environ)
    for value, var in zip(args, ("LAUNCHER_HCCN_TOOL", "LAUNCHER_DCMI_LIB")):
        if value != "-":
            env[var] = value
    binary = linkcheck_binary(root)
    timeout = float(json.loads(spec).get("timeout", 10)) * 4 + 30
    proc = subprocess.run([binary, "--spec", "-", "--json"], input=spec, capture_output=True, env=env,
                          timeout=timeout)
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        report = None
    return {"exit": proc.returncode, "report": report,
            "stderr": proc.stderr.decode("utf-8", "replace").strip()[-2000:]}
