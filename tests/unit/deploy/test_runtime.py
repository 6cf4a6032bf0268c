"""The runtime shipped to hosts: only the host-side modules, complete, and read back by the bootstrap."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import launcher
from launcher.deploy.remote import BOOTSTRAP
from tests.helpers import launcher_0_1
from launcher.deploy.runtime import SHARED_CORE, build_runtime, payload

PKG = Path(launcher.__file__).parent


def test_runtime_ships_the_host_side_and_the_shared_core_only():
    rt = build_runtime()
    names = {name for name, _ in rt.site}
    launcher_files = {n for n in names if n.startswith("launcher/") and not n.startswith("launcher/host/_native/")}
    host = PKG / "host"
    want = {f"launcher/{p.relative_to(PKG).as_posix()}" for p in host.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and "_native" not in p.parts}
    shared = {f"launcher/core/{n}" for n in SHARED_CORE}  # the rendezvous' ranktable code
    assert launcher_files == {"launcher/__init__.py"} | want | shared
    assert "launcher/host/systemd/ascend-launcher@.service" in launcher_files
    assert not [n for n in launcher_files - shared if n.startswith(("launcher/core/", "launcher/deploy/", "launcher/cli"))]
    assert "launcher/core/expand.py" not in launcher_files
    assert {"supervisor/supervisord.py", "supervisor/supervisorctl.py", "supervisor/version.txt"} <= names
    assert not [n for n in names if n.startswith(("supervisor/ui/", "supervisor/skel/"))]
    native = {n for n in names if n.startswith("launcher/host/_native/")}
    assert native and all(n.endswith((".c", ".h")) for n in native)  # sources only: built on the host
    # on the host the runtime is three files: every file created costs a cold host a create
    assert [n for n, _, _ in rt.files] == ["bin/launcher-agent", "bin/launcher-demo-rank"]
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(rt.tar))] == [
        "runtime/site.zip", "runtime/bin/launcher-agent", "runtime/bin/launcher-demo-rank"]
    assert rt.packed[:2] == b"\x1f\x8b" and len(rt.packed) < len(rt.members) / 2  # sent gzipped


def test_supervisord_and_the_host_modules_import_from_the_zip_with_its_pycs(tmp_path):
    """zipimport finds a pyc beside each module first; supervisor, which reads its version from a
    file beside options.py (no such path in a zip), says it from the shipped options.py."""
    import zipfile
    site = tmp_path / "site.zip"
    site.write_bytes(build_runtime().zip)
    with zipfile.ZipFile(site) as zf:
        names = set(zf.namelist())
        version = zf.read("supervisor/version.txt").decode().strip()
        assert zf.read("launcher/host/hostside.pyc")[:4] == importlib.util.MAGIC_NUMBER
    assert {"supervisor/supervisord.pyc", "supervisor/options.pyc", "launcher/host/agent.pyc"} <= names
    code = ("import sys; import supervisor.supervisord, supervisor.options as o, launcher.host.hostside, launcher.host.agent; "
            "print(o.VERSION); print(sorted({m.__loader__.__class__.__name__ for n, m in sys.modules.items() "
            "if n.startswith(('supervisor', 'launcher'))}))")
    proc = subprocess.run([sys.executable, "-S", "-B", "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [version, "['zipimporter']"]


def _bootstrap(tmp_path: Path, action: str, stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(tmp_path / "root"),
                           build_runtime().id, action, *args], input=stdin, capture_output=True)


def test_the_bootstrap_installs_the_runtime_with_its_modes(tmp_path):
    proc = _bootstrap(tmp_path, "install-runtime", build_runtime().tar)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"runtime": build_runtime().id}
    base = tmp_path / "root" / "runtime" / build_runtime().id
    sent = tarfile.open(fileobj=io.BytesIO(build_runtime().tar), mode="r:gz")
    for member in sent:
        name = member.name[len("runtime/"):]
        assert (base / name).read_bytes() == sent.extractfile(member).read()
        assert (base / name).stat().st_mode & 0o777 == member.mode & ~_umask()
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == [
        "bin", "bin/launcher-agent", "bin/launcher-demo-rank", "site.zip"]
    assert not [p for p in base.parent.iterdir() if ".tmp-" in p.name]


def test_a_host_with_another_python_bytecode_gets_pycs_for_its_own_once(tmp_path):
    """The operator's pycs are for its Python; a host whose magic differs recompiles them when it
    installs the runtime, instead of compiling every module at every process start."""
    import zipfile
    from launcher.deploy.runtime import MAGIC_TAG, site_zip
    other = b"\x01\x02\r\n"
    zipped = site_zip([("m/__init__.py", b""), ("m/x.py", b"X = 41 + 1\n")], magic=other)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("runtime/site.zip")
        info.size = len(zipped)
        tar.addfile(info, io.BytesIO(zipped))
    proc = _bootstrap(tmp_path, "install-runtime", buf.getvalue())
    assert proc.returncode == 0, proc.stderr
    site = tmp_path / "root" / "runtime" / build_runtime().id / "site.zip"
    with zipfile.ZipFile(site) as zf:
        assert zf.comment == MAGIC_TAG + importlib.util.MAGIC_NUMBER.hex().encode()
        assert zf.read("m/x.pyc")[:4] == importlib.util.MAGIC_NUMBER
        assert zf.read("m/x.py") == b"X = 41 + 1\n"
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
                           "import m.x; print(m.x.X)"], capture_output=True, text=True)
    assert proc.stdout.strip() == "42", proc.stderr


def test_prepare_unpacks_runtime_generation_and_key_in_one_upload(tmp_path):
    from launcher.core.plan import File
    files = {"manifest.json": File("manifest.json", b'{"programs": []}'),
             "env/r0.env": File("env/r0.env", b"A='1'\n", 0o600)}
    proc = _bootstrap(tmp_path, "prepare", payload(build_runtime(), files, b"k" * 64), "g1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"generation": "g1", "uploaded": True}
    root = tmp_path / "root"
    assert (root / "gens" / "g1" / "env" / "r0.env").stat().st_mode & 0o777 == 0o600
    assert (root / "state" / "secret").read_bytes() == b"k" * 64
    assert (root / "state" / "secret").stat().st_mode & 0o777 == 0o600
    assert (root / "run").stat().st_mode & 0o777 == 0o700
    assert (root / "runtime" / build_runtime().id / "site.zip").is_file()


def _tar(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.type = (len(data) if kind == tarfile.REGTYPE else 0), kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc"
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def test_the_bootstrap_refuses_paths_out_of_its_dir_links_and_damaged_archives(tmp_path):
    for bad in (_tar("../escape"), _tar("/abs"), _tar("site/link", kind=tarfile.SYMTYPE),
                _tar("site/ok", b"x" * 2000)[:1000],  # cut short
                b"\x01" + _tar("site/ok")[1:]):  # header checksum no longer matches
        proc = _bootstrap(tmp_path, "install-runtime", bad)
        assert proc.returncode != 0
        assert b"refusing archive member" in proc.stderr
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "root" / "runtime" / build_runtime().id).exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_compiled_runtime_is_kept_and_a_damaged_copy_is_not_used(tmp_path, monkeypatch):
    import zipfile
    from launcher.deploy.runtime import Runtime
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    site, files = (("m/__init__.py", b"X = 1\n"),), (("bin/w", b"#!/bin/sh\n", 0o755),)
    first = Runtime("t-1", site, files).packed
    kept = list((tmp_path / "ascend-launcher").iterdir())
    assert len(kept) == 1 and "t-1" in kept[0].name
    members = list(tarfile.open(fileobj=io.BytesIO(Runtime("t-1", site, files).tar), mode="r:gz"))
    assert [m.name for m in members] == ["runtime/site.zip", "runtime/bin/w"]
    assert zipfile.ZipFile(io.BytesIO(Runtime("t-1", site, files).zip)).namelist() == ["m/__init__.py", "m/__init__.pyc"]
    assert Runtime("t-1", site, files).packed == first  # read back
    kept[0].write_bytes(kept[0].read_bytes()[:-10])  # cut short: rebuilt, not shipped damaged
    assert Runtime("t-1", site, files).packed == first
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a dir")  # no usable cache dir: built every time, no error
    assert Runtime("t-1", site, files).packed == first

def test_state_of_a_host_deployed_by_an_older_launcher_is_read_with_the_runtime_it_runs(tmp_path):
    """Before the zip, the runtime was a site/ tree: a new launcher's `state` on such a host uses
    that runtime's hostside (what runs there) and says its own runtime is missing; any other
    action is told the runtime is missing, so it ships this one first."""
    old_site = tmp_path / "root" / "runtime" / "an-older-version" / "site"
    launcher_0_1(old_site, "launcher/__init__.py", "launcher/hostside.py")  # the flat layout's host side
    (tmp_path / "root" / "runtime" / "current").symlink_to("an-older-version")
    proc = _bootstrap(tmp_path, "state", b"")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.splitlines()[-1])
    assert state["runtime_missing"] is True and state["root"] == str(tmp_path / "root")
    assert state["generation"] is None and state["programs"] == []  # hostside's answer, not the bootstrap's
    proc = _bootstrap(tmp_path, "down", b"")
    assert json.loads(proc.stdout) == {"runtime_missing": True, "root": str(tmp_path / "root"), "deployed": True}
