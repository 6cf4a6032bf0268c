"""The package's three sides stay apart: launcher/core is pure, launcher/host ships alone.

- core (the pure pipeline) imports nothing of deploy, host or the CLI, and does no I/O:
  no I/O module, no open()/print(), ``os`` only for pure path names (checked on the AST);
- host (what ships to every host, in the runtime zip) imports nothing of the package but
  itself, the package's ``__init__`` (its version) and the few pure core modules the runtime
  ships beside it (SHARED_CORE, which import only each other): anything else would be missing there;
- deploy (the operator-side shell) never imports the CLI.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import launcher
from launcher.deploy.runtime import SHARED_CORE

PKG = Path(launcher.__file__).parent
SIDES = ("core", "deploy", "host", "cli")


def _modules(side: str) -> list[Path]:
    return sorted((PKG / side).rglob("*.py"))


def _dotted(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """Every ``launcher...`` module that ``path`` imports, resolved to an absolute dotted name
    (relative imports too, at any depth, also inside functions)."""
    here = _dotted(path)
    pkg_parts = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "launcher" or mod.startswith("launcher."):
                # `from launcher.core import plan` imports launcher.core.plan
                for alias in node.names:
                    sub = f"{mod}.{alias.name}"
                    is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                        (PKG.parent / Path(*sub.split("."))).is_dir()
                    out.add(sub if is_module else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name == "launcher" or a.name.startswith("launcher."))
    return out


def _side_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SIDES else "top"


@pytest.mark.parametrize("side", SIDES)
def test_each_side_has_modules(side):
    assert _modules(side), f"launcher/{side} is empty"


def test_the_core_imports_nothing_of_the_other_sides():
    bad = {f"{_dotted(p)} imports {m}" for p in _modules("core") for m in package_imports(p)
           if _side_of(m) != "core"}
    assert not bad, sorted(bad)


# the core's modules the runtime ships beside launcher/host (deploy/runtime.py SHARED_CORE)
SHARED = {"launcher.core" if n == "__init__.py" else f"launcher.core.{n[:-3]}" for n in SHARED_CORE}


def test_the_host_side_imports_only_itself_the_package_version_and_the_shipped_core():
    bad = {f"{_dotted(p)} imports {m}" for p in _modules("host") for m in package_imports(p)
           if _side_of(m) != "host" and m != "launcher" and m not in SHARED}
    assert not bad, sorted(bad)


def test_the_shipped_core_modules_import_only_each_other():
    # what they import must be in the runtime too: a host has nothing else of the package
    bad = {f"{_dotted(PKG / 'core' / n)} imports {m}" for n in SHARED_CORE
           for m in package_imports(PKG / "core" / n) if m not in SHARED}
    assert not bad, sorted(bad)
    assert "launcher.core.ranktable" in SHARED


def test_the_operator_side_never_imports_the_cli():
    bad = {f"{_dotted(p)} imports {m}" for p in _modules("deploy") + _modules("core") + _modules("host")
           for m in package_imports(p) if m.startswith("launcher.cli") or m == "launcher.__main__"}
    assert not bad, sorted(bad)


def test_the_checker_sees_relative_imports(tmp_path):
    # the rule above would pass vacuously if package_imports missed relative forms
    agent = PKG / "host" / "agent.py"
    assert any(m.startswith("launcher.host.") for m in package_imports(agent))
    apply = PKG / "deploy" / "apply.py"
    assert any(m.startswith("launcher.core.") for m in package_imports(apply))


# --- the core does no I/O ------------------------------------------------------------------
# Modules that reach files, processes, the network, threads, signals, the terminal or the
# clock (the core is a pure function of its input: same text, same bytes).
IO_MODULES = frozenset({
    "subprocess", "socket", "socketserver", "select", "selectors", "shutil", "tempfile", "threading",
    "_thread", "multiprocessing", "concurrent", "asyncio", "signal", "http", "urllib", "ftplib",
    "smtplib", "ssl", "xmlrpc", "paramiko", "fabric", "invoke", "io", "_io", "codecs", "pathlib",
    "glob", "fileinput", "zipfile", "zipimport", "tarfile", "gzip", "bz2", "lzma", "mmap", "fcntl",
    "pty", "tty", "termios", "sqlite3", "dbm", "shelve", "logging", "sys", "builtins", "ctypes",
    "platform", "getpass", "pwd", "grp", "resource", "atexit", "webbrowser", "time", "datetime",
    "random", "secrets", "uuid",
})
# importlib: only ``resources``, to read the package's own schema (package data, like an import)
IMPORTLIB_ALLOWED = frozenset({"importlib.resources"})
IO_CALLS = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "__import__"})
# os / os.path / posixpath names that compute on strings only (no cwd, no environment, no disk)
PURE_PATH = frozenset({"join", "split", "splitext", "dirname", "basename", "normpath", "normcase", "isabs",
                       "commonprefix", "sep", "altsep", "extsep", "curdir", "pardir"})
PURE_OS = frozenset({"sep", "altsep", "extsep", "curdir", "pardir", "linesep"})
PATH_MODULES = ("os.path", "posixpath", "ntpath")


def _chain(node: ast.AST) -> list[str] | None:
    """a.b.c as [a, b, c], or None when it does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id] + parts[::-1]


def io_violations(source: str, where: str = "<src>") -> list[str]:
    """What in this module's source reaches outside the process's memory."""
    tree = ast.parse(source)
    out: list[str] = []
    bound: dict[str, str] = {}  # local name -> the module (os, os.path, posixpath, ...) it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in IO_MODULES or (top == "importlib" and a.name not in IMPORTLIB_ALLOWED):
                    out.append(f"{where}:{node.lineno}: imports {a.name}")
                elif top in ("os", "posixpath", "ntpath"):
                    bound[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            top = node.module.split(".")[0]
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if top in IO_MODULES or (top == "importlib" and full not in IMPORTLIB_ALLOWED
                                         and node.module not in IMPORTLIB_ALLOWED):
                    out.append(f"{where}:{node.lineno}: imports {full}")
                elif full in PATH_MODULES:                      # from os import path
                    bound[a.asname or a.name] = full
                elif node.module == "os" and a.name not in PURE_OS:
                    out.append(f"{where}:{node.lineno}: imports {full}")
                elif node.module in PATH_MODULES and a.name not in PURE_PATH:
                    out.append(f"{where}:{node.lineno}: imports {full}")
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_CALLS:
            out.append(f"{where}:{node.lineno}: calls {node.func.id}()")
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            chain = _chain(node)
            if not chain or chain[0] not in bound:
                continue
            dotted = ".".join([bound[chain[0]]] + chain[1:])
            parts = dotted.split(".")
            if parts[0] == "os" and len(parts) == 2 and parts[1] in PURE_OS:
                continue
            module = next((m for m in PATH_MODULES if dotted.startswith(m + ".")), None)
            if module and dotted[len(module) + 1:] in PURE_PATH:
                continue
            out.append(f"{where}:{node.lineno}: uses {dotted}")
        elif isinstance(node, ast.Name) and node.id in bound and id(node) not in inner:
            out.append(f"{where}:{node.lineno}: passes {bound[node.id]} around")  # e.g. f(os): anything goes
    return out


def test_the_core_does_no_io():
    bad = [v for p in _modules("core") for v in io_violations(p.read_text(encoding="utf-8"), _dotted(p))]
    assert not bad, bad


# What launcher/core/schema.py did before the compiled check's disk cache moved to deploy.files:
# the checker above must refuse it.
_SCHEMA_WITH_A_DISK_CACHE = """
import hashlib
import importlib.util
import os
from importlib import resources

import fastjsonschema


def _cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ascend-launcher")


def _fast_check(text, schema):
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"schema_check_{key}.py")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(fastjsonschema.compile_to_code(schema))
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location("m", path)
    return spec
"""


def test_the_io_check_refuses_the_schema_module_with_its_disk_cache():
    found = "\n".join(io_violations(_SCHEMA_WITH_A_DISK_CACHE, "schema"))
    for what in ("imports importlib.util", "uses os.environ.get", "uses os.path.expanduser", "uses os.path.exists",
                 "uses os.makedirs", "uses os.getpid", "calls open()", "uses os.replace"):
        assert what in found, (what, found)
    assert "os.path.join" not in found and "os.path.dirname" not in found  # pure path names are fine


@pytest.mark.parametrize("source, expected", [
    ("import subprocess", "imports subprocess"),
    ("from socket import create_connection", "imports socket.create_connection"),
    ("import urllib.request", "imports urllib.request"),
    ("from pathlib import Path", "imports pathlib.Path"),
    ("import shutil as sh", "imports shutil"),
    ("from os import replace", "imports os.replace"),
    ("from os.path import exists", "imports os.path.exists"),
    ("from os import path as p\np.isfile('x')", "uses os.path.isfile"),
    ("import os as o\no.listdir('.')", "uses os.listdir"),
    ("import os\nos.path.relpath('x')", "uses os.path.relpath"),  # reads the working directory
    ("import posixpath\nposixpath.exists('x')", "uses posixpath.exists"),
    ("import os\nf(os)", "passes os around"),
    ("print('x')", "calls print()"),
    ("import importlib\nimportlib.import_module('x')", "imports importlib"),
])
def test_the_io_check_sees(source, expected):
    assert any(expected in v for v in io_violations(source)), io_violations(source)


@pytest.mark.parametrize("source", [
    "import os.path\nos.path.splitext('a.yaml')",
    "import os\nos.path.join('a', os.sep)",
    "import posixpath\nposixpath.dirname('/a/b')",
    "from importlib import resources",
    "import json\njson.dumps({})",
])
def test_the_io_check_allows_pure_names(source):
    assert io_violations(source) == []


# --- every side stays readable -------------------------------------------------------------
MAX_LINES = 400


@pytest.mark.parametrize("path", [p for side in SIDES for p in _modules(side)],
                         ids=lambda p: p.relative_to(PKG).as_posix())
def test_each_module_is_short_and_says_what_it_is_for(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) < MAX_LINES, f"{path.name}: split it"
    doc = ast.get_docstring(ast.parse(text), clean=False)
    assert doc, f"{path.name} has no module docstring"
    lines = doc.splitlines()
    assert lines[0].strip() and (len(lines) == 1 or not lines[1].strip()), \
        f"{path.name}: the docstring's first line is the one-line summary, then a blank line"
