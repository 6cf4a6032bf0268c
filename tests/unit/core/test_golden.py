"""Every example topology validates and renders to exactly the files under tests/golden/.

A change to what hosts receive shows up as a diff here. To accept an intended change:
UPDATE_GOLDEN=1 python -m pytest tests/unit/core/test_golden.py, then review `git diff tests/golden`.
"""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.helpers import CONFIGS, ROOT, run_cli

GOLDEN = ROOT / "tests" / "golden"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


MODES = "MODES"  # git keeps only 644/755, so the expected modes (0600 env files) live in this file


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MODES}


def golden_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    modes = dict(line.split() for line in (root / MODES).read_text().splitlines())
    return {path: (content, int(modes[path], 8)) for path, (content, _) in tree(root).items()}


def test_every_config_has_a_golden_tree():
    # tests/golden/kubernetes: the exports (test_kube_export.py)
    assert {p.stem for p in CONFIG_FILES} == {p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name != "kubernetes"}


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_renders_to_golden_files(config: Path, tmp_path: Path):
    out = tmp_path / "out"
    run = run_cli("render", str(config), "-o", str(out))
    assert run.code == 0, run.err
    expected_dir = GOLDEN / config.stem
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(expected_dir, ignore_errors=True)
        shutil.copytree(out, expected_dir)
        (expected_dir / MODES).write_text("".join(f"{p} {m:o}\n" for p, (_, m) in tree(out).items()))
    got, expected = tree(out), golden_tree(expected_dir)
    assert sorted(got) == sorted(expected)
    for path, (content, mode) in expected.items():
        assert got[path][0] == content, f"{config.stem}/{path} differs from the golden file"
        assert got[path][1] == mode, f"{config.stem}/{path} mode {oct(got[path][1])} != {oct(mode)}"


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_rendering_is_deterministic(config: Path, tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("render", str(config), "-o", str(a)).code == 0
    assert run_cli("render", str(config), "-o", str(b)).code == 0
    assert tree(a) == tree(b)
