"""The lock file: core parses and formats it, the operator side (deploy.files) reads and writes it."""
from __future__ import annotations

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.lockfile import lock_path, lock_text, parse_lock
from launcher.deploy.files import read_lock, write_lock
from tests.helpers import run_cli, write

FACTS = {("node1", 1): "10.0.0.2", ("node0", 0): "10.0.0.1"}


def test_lock_text_parses_back_to_the_same_facts():
    text = lock_text(FACTS)
    assert text.startswith("# Written by `launcher discover`")
    assert parse_lock(text, "t.lock.yaml") == FACTS
    assert lock_path("dir/topo.yaml") == "dir/topo.lock.yaml" and lock_path("topo") == "topo.lock.yaml"


def test_a_yaml_error_names_the_lock_file_as_when_yaml_read_the_file(tmp_path):
    with pytest.raises(SpecErrors) as exc:
        parse_lock("devices: [\n  x: y\n", "t.lock.yaml")
    msg = str(exc.value)
    assert msg.startswith("t.lock.yaml:1:1: error: cannot read the lock file: while parsing a flow sequence\n"
                          '  in "t.lock.yaml", line 1, column 10')
    assert "^" not in msg  # no snippet: the same words as reading the file gave


def test_a_lock_file_without_devices():
    with pytest.raises(SpecErrors, match="the lock file has no `devices:` mapping"):
        parse_lock("version: 1\n", "t.lock.yaml")


def test_write_lock_writes_only_on_change_and_read_lock_reads_it(tmp_path):
    topo = str(tmp_path / "topo.yaml")
    assert read_lock(topo) == {}
    assert write_lock(topo, FACTS) is True
    assert write_lock(topo, dict(FACTS)) is False
    assert read_lock(topo) == FACTS
    assert (tmp_path / "topo.lock.yaml").read_text(encoding="utf-8") == lock_text(FACTS)


def test_an_unreadable_lock_file_is_bad_input(tmp_path):
    path = write(tmp_path, "version: 1\nname: t\nhosts: []\n")
    (tmp_path / "topo.lock.yaml").mkdir()
    run = run_cli("validate", path)
    assert run.code == 2
    assert "topo.lock.yaml:1:1: error: cannot read the lock file: [Errno 21] Is a directory" in run.err


def test_the_schema_check_is_compiled_once_into_the_users_cache(tmp_path, monkeypatch):
    import fastjsonschema

    from launcher.deploy import files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files.schema_check.cache_clear()
    try:
        check = files.schema_check()
        cached = list((tmp_path / "ascend-launcher").glob("schema_check_*.py"))
        assert len(cached) == 1
        check({"version": 1, "name": "t", "hosts": [{"name": "a", "address": "10.0.0.1"}]})
        with pytest.raises(fastjsonschema.JsonSchemaException):
            check({"version": 1, "name": "t", "hosts": [{"name": "a", "address": "10.0.0.1"}], "bogus": 1})
        files.schema_check.cache_clear()
        files.schema_check()  # from the cache: not written again
        assert list((tmp_path / "ascend-launcher").glob("schema_check_*.py")) == cached
    finally:
        files.schema_check.cache_clear()


def test_without_a_writable_cache_the_check_is_compiled_in_memory(tmp_path, monkeypatch):
    from launcher.core.schema import compiled_check
    from launcher.deploy import files
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file: no directory can go there
    files.schema_check.cache_clear()
    try:
        assert files.schema_check() is compiled_check()
    finally:
        files.schema_check.cache_clear()
