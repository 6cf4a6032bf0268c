"""Hostile YAML is refused at its own line:col, fast and in bounded memory, never a hang or a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.yamlsrc import MAX_DEPTH, MAX_NODES, decode_text, load_yaml


def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _only_error(text: str) -> str:
    with pytest.raises(SpecErrors) as err:
        load_yaml(text, "t.yaml")
    assert len(err.value.diagnostics) == 1
    return str(err.value.diagnostics[0])


def test_an_alias_bomb_is_refused_at_the_alias_that_blows_past_the_budget():
    # a6 is 5.4 million nodes: its first use (line 8, column 10) is the one to blame
    msg = _only_error(_bomb())
    assert msg.startswith("t.yaml:8:10: error: ")
    assert "alias *a6 repeats more than 1,000,000 nodes" in msg


def test_many_uses_of_a_small_alias_add_up():
    item = "{" + ", ".join(f"k{i}: v" for i in range(99)) + "}"
    text = f"base: &b {item}\nlist:\n" + "".join("  - *b\n" for _ in range(MAX_NODES // 150))
    msg = _only_error(text)
    assert msg.startswith("t.yaml:3:5: error: ") and "alias *b repeats 199 nodes each time" in msg


def test_aliases_within_the_budget_are_expanded_as_before():
    src = load_yaml("x: &m {a: 1, l: [1, 2]}\ny: *m\nz:\n  <<: *m\n  b: 2\n", "t.yaml")
    assert src.data == {"x": {"a": 1, "l": [1, 2]}, "y": {"a": 1, "l": [1, 2]}, "z": {"b": 2, "a": 1, "l": [1, 2]}}
    # a tree, as JSON's data model has it: no two paths share one object
    assert src.data["x"] is not src.data["y"] and src.data["x"]["l"] is not src.data["y"]["l"]


def test_a_recursive_alias_is_an_error_at_the_alias():
    assert _only_error("top:\n  a: &r [1, *r]\n").startswith("t.yaml:2:13: error: YAML: alias *r is used inside")
    assert "alias *m is used inside" in _only_error("m: &m {x: *m}\n")


def test_a_document_nested_too_deep_is_an_error_where_it_gets_too_deep():
    msg = _only_error("[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50))
    assert msg.startswith(f"t.yaml:1:{MAX_DEPTH + 1}: error: YAML: nested more than {MAX_DEPTH} levels")


def test_a_nul_byte_is_reported_at_its_own_line_and_column():
    assert _only_error("a: 1\nb: x\x00y\n").startswith("t.yaml:2:5: error: YAML: character #x0000 is not allowed")


def test_a_byte_that_is_not_utf8_is_reported_at_its_own_line_and_column():
    with pytest.raises(SpecErrors) as err:
        decode_text("a: 1\n# ü\nb: x\xff".encode("latin-1").replace(b"\xfc", "ü".encode()), "t.yaml")
    assert str(err.value.diagnostics[0]) == "t.yaml:3:5: error: not UTF-8 text: byte 0xff at byte offset 14 (invalid start byte)"
    assert decode_text("ü: 1\n".encode(), "t.yaml") == "ü: 1\n"


def test_validate_refuses_a_bomb_with_exit_2_and_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("version: 1\nname: bomb\n" + _bomb())
    # the child may not grow past 1 GiB: the bomb expanded would need tens of GB
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))"
    proc = subprocess.run([sys.executable, "-c", f"{limit}\nimport sys\nfrom launcher.cli import main\n"
                           f"sys.exit(main(['validate', {str(path)!r}]))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:10:10: error: YAML: aliases expand the document past" in proc.stderr
    assert "Traceback" not in proc.stderr


# A document without an anchor ("&") is bounded by the builder's own count, not by a walk of
# its own before it (bench/render_scale.py): the same bounds, refused with the same words.
def test_a_document_without_anchors_past_the_node_budget_is_refused():
    assert _only_error("l: [" + ",".join(["1"] * (MAX_NODES - 1)) + "]\n") == \
        f"t.yaml:1:1: error: YAML: the document has more than {MAX_NODES:,} nodes"


def test_a_mapping_nested_too_deep_without_anchors_is_an_error_at_its_first_key_too_deep():
    assert load_yaml("{a: " * (MAX_DEPTH - 1) + "1" + "}" * (MAX_DEPTH - 1), "t.yaml").data
    msg = _only_error("a: 1\na: 2\nb: " + "{a: " * MAX_DEPTH + "1" + "}" * MAX_DEPTH)
    assert msg.startswith("t.yaml:3:") and f"nested more than {MAX_DEPTH} levels deep" in msg  # before the duplicate


def test_a_merge_key_without_anchors_is_honoured():
    assert load_yaml("a:\n  <<: [{x: 1}, {y: 2, x: 3}]\n  y: 4\n", "t.yaml").data == {"a": {"y": 4, "x": 1}}
