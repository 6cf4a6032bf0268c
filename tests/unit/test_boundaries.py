"""The package's three sides stay apart: launcher/core is pure, launcher/host ships alone.

- core (the pure pipeline) imports nothing of deploy, host or the CLI;
- host (what ships to every host, in the runtime zip) imports nothing of the package but
  itself and the package's ``__init__`` (its version): anything else would be missing there;
- deploy (the operator-side shell) never imports the CLI.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import launcher

PKG = Path(launcher.__file__).parent
SIDES = ("core", "deploy", "host")


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


def test_the_host_side_imports_only_itself_and_the_package_version():
    bad = {f"{_dotted(p)} imports {m}" for p in _modules("host") for m in package_imports(p)
           if _side_of(m) != "host" and m != "launcher"}
    assert not bad, sorted(bad)


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
