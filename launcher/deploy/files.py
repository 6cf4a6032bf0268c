"""The pipeline's files on the operator's machine: the topology, its lock file, the compiled schema check.

The functional core (launcher.core) does no I/O; this module reads what it needs and
writes what it produced, with the messages and exit codes the CLI has always given.
"""
from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
from functools import lru_cache

import fastjsonschema

from ..core.errors import Diagnostic, Loc, SpecErrors
from ..core.load import DeviceFacts, NicFacts, SuperPodFacts
from ..core.lockfile import Facts, lock_path, lock_text, parse_lock, parse_nics, parse_superpod
from ..core.pipeline import Result, compile_source
from ..core.schema import CHECK_REVISION, Check, check_source, compiled_check, schema_text
from ..core.yamlsrc import Source, decode_text, load_yaml
from .inputs import read_inputs


def read_source(path: str) -> Source:
    """Read and parse a topology file; a missing file is bad input, not a crash."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SpecErrors([Diagnostic(None, "", f"cannot read {path}: {exc.strerror}")]) from None
    shown = os.path.relpath(path) if not os.path.isabs(path) else path
    return load_yaml(decode_text(data, shown), shown)


def _lock_file(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return decode_text(fh.read(), path)  # not UTF-8: bad input at its offset, not a traceback
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpecErrors([Diagnostic(Loc(path, 1, 1), "", f"cannot read the lock file: {exc}")]) from None


def read_lock(topology_path: str) -> Facts:
    """(host, device id) -> IP from the lock file beside the topology; {} when there is none."""
    path = lock_path(topology_path)
    text = _lock_file(path)
    return {} if text is None else parse_lock(text, path)


def read_superpod_facts(topology_path: str) -> SuperPodFacts:
    """Atlas A3 SuperPoD ids and SDIDs from the lock file; none when there is no file."""
    path = lock_path(topology_path)
    text = _lock_file(path)
    return SuperPodFacts() if text is None else parse_superpod(text, path)


def read_nics(topology_path: str) -> NicFacts:
    """host -> the interface holding its address, from the lock file; none when there is no file."""
    path = lock_path(topology_path)
    text = _lock_file(path)
    return {} if text is None else parse_nics(text, path)


def write_lock(topology_path: str, facts: Facts, a3: SuperPodFacts | None = None,
               nics: NicFacts | None = None) -> bool:
    """Write the lock file if its content changes; True when it was (re)written."""
    path = lock_path(topology_path)
    text = lock_text(facts, a3, nics)
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ascend-launcher")


@lru_cache(maxsize=1)
def schema_check() -> Check:
    """The compiled schema check, kept in the user's cache: compiling it costs more than a whole
    `launcher status`. Kept as bytecode (marshal), not as a module whose pyc Python would write
    beside it: under PYTHONDONTWRITEBYTECODE (common in container images) that pyc is never
    written and every command compiled the check's source again (~0.12 s). Keyed by the schema's
    and fastjsonschema's versions and the interpreter's bytecode; without a writable cache it is
    compiled in memory."""
    key = hashlib.sha256(f"{fastjsonschema.VERSION}\0{CHECK_REVISION}\0{schema_text()}\0".encode()
                         + importlib.util.MAGIC_NUMBER).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"schema_check_{key}.marshal")
    name = f"_launcher_schema_check_{key}"
    try:
        try:
            with open(path, "rb") as fh:
                code = marshal.loads(fh.read())
        except (FileNotFoundError, EOFError, ValueError, TypeError):  # none yet, or cut short: make it
            code = compile(check_source(), name, "exec")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(marshal.dumps(code))
            os.replace(tmp, path)
        namespace: dict[str, object] = {"__name__": name}
        exec(code, namespace)  # our own generated check (fastjsonschema's code), from our own cache
        check: Check = namespace["validate"]  # type: ignore[assignment]
        return check
    except (OSError, SyntaxError, KeyError, TypeError):  # no writable cache: compile in memory
        return compiled_check()


def compile_file(path: str, facts: DeviceFacts | None = None) -> Result:
    """A topology file plus its lock file of discovered device IPs (if any)."""
    src = read_source(path)
    return compile_source(src, read_lock(path) if facts is None else facts, schema_check(),
                          read_superpod_facts(path), read_inputs(src.data, path), read_nics(path))
