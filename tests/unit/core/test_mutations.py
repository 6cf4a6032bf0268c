"""Property (issue 21): a mutated topology is either refused cleanly (exit 2, no traceback) or it
renders files that say exactly what was planned: supervisord.conf's sections, as supervisord's own
parser reads them, are the planned programs (and groups) plus the fixed sections, and each env
file, sourced by sh, gives exactly the planned values.

Seeds are the shipped configs; mutations replace scalars (strings with control characters, NUL,
unicode; floats for integers; other types), delete keys, change a node's type, duplicate lines
(duplicate keys), and insert random bytes (invalid UTF-8 included) into the file or a lock file.
Bounded and deterministic: derandomized, no example database, a fixed number of examples.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from supervisor.options import UnhosedConfigParser

from launcher.cli import main
from launcher.core.pipeline import rendered
from launcher.core.render import by_owner, slot
from launcher.deploy.files import compile_file
from tests.helpers import ROOT

SEEDS = sorted([*(ROOT / "configs").glob("*.yaml"), *(ROOT / "launcher" / "examples").glob("*.yaml")])
MAX_EXAMPLES = int(os.environ.get("MUTATION_EXAMPLES", "300"))  # ~30 s on 2 cores
ENV_CHECKS_PER_EXAMPLE = 8  # sourcing costs a process each: the first and last programs of each example
SHELL_EXTRA = {"PWD", "SHLVL", "_", "OLDPWD", "LAUNCHER_SLOT"}  # what sh adds or the test sets

# Text that paths, names and env values must survive or be refused for.
NASTY = st.lists(st.sampled_from(["\0", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "é", "中", "😀",
                                 " ", ";", "#", "%", "%(here)s", "'", '"', "\\", "$", "`", "[", "]", "=", "/",
                                 "a", "0", "{{", "}}", "-", ".", "\n[program:evil]\ncommand=/bin/id"]),
                 max_size=8).map("".join)
SCALARS = st.one_of(NASTY, st.text(max_size=8), st.integers(-3, 70000), st.floats(allow_nan=True),
                    st.booleans(), st.none())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The configs with what they name (mindie/ base files), where mutated copies are written."""
    d = tmp_path_factory.mktemp("mutations")
    shutil.copytree(ROOT / "configs", d, dirs_exist_ok=True)
    return d


def _paths(node: Any, at: tuple = ()) -> list[tuple]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def mutate_data(data: st.DataObject, doc: Any, gentle: bool) -> Any:
    """gentle: only env values and appended text, which mostly stay valid and so reach render."""
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths), label="path")
        node = _get(doc, path)
        env_paths = [p for p in paths if len(p) >= 2 and p[-2] == "env"]
        ops = ["env", "append"] if gentle else ["scalar", "float", "delete", "retype", "env", "append"]
        op = data.draw(st.sampled_from(ops), label="op")
        str_paths = [p for p in paths if p and isinstance(_get(doc, p), str)]
        if op == "append" and str_paths:  # keeps the value mostly valid: reaches render more often
            path = data.draw(st.sampled_from(str_paths), label="string")
            doc = _set(doc, path, _get(doc, path) + data.draw(NASTY, label="appended"))
        elif op == "env" and env_paths:
            doc = _set(doc, data.draw(st.sampled_from(env_paths)), data.draw(st.text(max_size=20) | NASTY))
        elif gentle:
            continue
        elif op == "float" and isinstance(node, int) and not isinstance(node, bool):
            doc = _set(doc, path, float(node))
        elif op == "delete" and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif op == "retype":
            doc = _set(doc, path, data.draw(st.sampled_from([[], {}, [node], {"k": node}, str(node)])))
        else:
            doc = _set(doc, path, data.draw(SCALARS, label="scalar"))
    return doc


def mutate_text(data: st.DataObject, text: bytes) -> bytes:
    """Duplicate keys (a line twice) and random bytes, invalid UTF-8 included."""
    if data.draw(st.integers(0, 3), label="duplicate a line") == 0:
        lines = text.split(b"\n")
        k = data.draw(st.integers(0, len(lines) - 1))
        lines.insert(k, lines[k])
        text = b"\n".join(lines)
    if data.draw(st.integers(0, 7), label="insert bytes") == 0:
        at = data.draw(st.integers(0, len(text)))
        text = text[:at] + data.draw(st.binary(min_size=1, max_size=4)) + text[at:]
    return text


def run_main(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)  # an exception here is the traceback a user would see: the test fails
    return code, err.getvalue()


def sections(conf: bytes) -> set[str]:
    parser = UnhosedConfigParser()  # supervisord's own reader (inline ; and # comments, no strict)
    parser.read_string(conf.decode("utf-8"))
    return set(parser.sections())


def sourced(env_file: Path, slot_arg: str | None) -> dict[str, str]:
    """The environment sh has after sourcing the file, read back exactly (NUL-separated)."""
    env = {"LAUNCHER_SLOT": slot_arg} if slot_arg is not None else {}
    out = subprocess.run(["/bin/sh", "-c", '. "$1" && exec /usr/bin/env -0', "sh", str(env_file)],
                         env=env, capture_output=True, check=True).stdout
    pairs = (item.split(b"=", 1) for item in out.split(b"\0") if item)
    return {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in pairs}


def fixed_sections(conf: bytes) -> set[str]:
    return {s for s in sections(conf) if not s.startswith(("program:", "group:"))}


@pytest.fixture(scope="module")
def seed_fixed(workdir: Path) -> set[str]:
    """The fixed sections, as an unmutated seed renders them."""
    plan = compile_file(str(workdir / "demo-local.yaml")).plan
    _, files = rendered(plan)
    return fixed_sections(next(iter(files.values()))["supervisord.conf"].content)


@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no explain phase: it takes minutes
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_a_mutated_topology_is_refused_cleanly_or_renders_exactly_what_was_planned(workdir, seed_fixed, seed, data):
    doc = yaml.safe_load(seed.read_text())
    gentle = data.draw(st.booleans(), label="gentle")
    doc = mutate_data(data, doc, gentle)
    text = yaml.safe_dump(doc, allow_unicode=data.draw(st.booleans()), sort_keys=False).encode("utf-8", "surrogatepass")
    if not gentle:
        text = mutate_text(data, text)
    path = workdir / f"mutated-{seed.stem}.yaml"
    path.write_bytes(text)
    lock = workdir / f"mutated-{seed.stem}.lock.yaml"
    lock.unlink(missing_ok=True)
    if not gentle and data.draw(st.integers(0, 5), label="a lock file") == 0:
        lock.write_bytes(data.draw(st.binary(max_size=40) | st.just(b"version: 1\ndevices: {a: {0: 10.0.0.\xff}}\n")))

    code, err = run_main(["validate", str(path)])
    assert code in (0, 2), err
    event("refused" if code == 2 else "validated")  # --hypothesis-show-statistics shows the split
    if code == 2:
        assert err.rstrip("\n").endswith("nothing was changed"), err
        return
    plan = compile_file(str(path)).plan
    _, files = rendered(plan)
    checked = 0
    for hp in plan.hosts:
        host_files = files[hp.host.name]
        conf = host_files["supervisord.conf"].content
        owners = by_owner(hp.programs)
        assert sections(conf) == (seed_fixed | {f"program:{p.name}" for p in hp.programs}
                                  | {f"group:{o}" for o in owners})
        for owner, programs in owners.items():
            env_path = workdir / "env.out"
            env_path.write_bytes(host_files[f"env/{owner}.env"].content)
            programs = [p for p in programs if p.kind != "container"]  # an instance's container sources none
            for p in (programs[0], programs[-1]) if checked < ENV_CHECKS_PER_EXAMPLE else ():
                got = sourced(env_path, slot(p))
                planned = dict(p.env)
                assert {k: got.get(k) for k in planned} == planned
                assert set(got) - set(planned) <= SHELL_EXTRA
                checked += 1
