"""deploy.files: the operator side reads the topology and the lock file, writes the lock file,
and keeps the compiled schema check in the user's cache."""
from __future__ import annotations

import pytest

from launcher.core.lockfile import lock_text
from launcher.deploy.files import read_lock, write_lock
from tests.helpers import run_cli, write

FACTS = {("node1", 1): "10.0.0.2", ("node0", 0): "10.0.0.1"}


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
        cached = list((tmp_path / "ascend-launcher").glob("schema_check_*.marshal"))
        assert len(cached) == 1
        check({"version": 1, "name": "t", "hosts": [{"name": "a", "address": "10.0.0.1"}]})
        with pytest.raises(fastjsonschema.JsonSchemaException):
            check({"version": 1, "name": "t", "hosts": [{"name": "a", "address": "10.0.0.1"}], "bogus": 1})
        written = cached[0].stat().st_mtime_ns

        # the next command loads the bytecode: it neither generates nor compiles the source again,
        # whether or not Python may write pycs (PYTHONDONTWRITEBYTECODE, as in many images)
        def no_source() -> str:
            raise AssertionError("the cached check was compiled again")
        monkeypatch.setattr(files, "check_source", no_source)
        files.schema_check.cache_clear()
        again = files.schema_check()
        assert list((tmp_path / "ascend-launcher").glob("schema_check_*")) == cached
        assert cached[0].stat().st_mtime_ns == written
        with pytest.raises(fastjsonschema.JsonSchemaException):
            again({"version": 1, "name": "t", "hosts": [], "bogus": 1})
    finally:
        files.schema_check.cache_clear()


def test_a_cache_file_cut_short_is_made_again(tmp_path, monkeypatch):
    import fastjsonschema

    from launcher.deploy import files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files.schema_check.cache_clear()
    try:
        files.schema_check()
        [cached] = (tmp_path / "ascend-launcher").glob("schema_check_*.marshal")
        cached.write_bytes(cached.read_bytes()[:100])  # a full disk or a crash mid-write
        files.schema_check.cache_clear()
        check = files.schema_check()
        with pytest.raises(fastjsonschema.JsonSchemaException):
            check({"version": 1, "name": "t", "hosts": [], "bogus": 1})
        assert cached.stat().st_size > 100
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


def test_a_topology_that_cannot_be_read(tmp_path):
    run = run_cli("validate", str(tmp_path / "missing.yaml"))
    assert run.code == 2
    assert run.err == f"error: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n" \
                      "1 error; nothing was changed\n"
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1\nname: \xff\n")
    run = run_cli("validate", str(tmp_path / "latin1.yaml"))
    assert run.code == 2
    assert run.err.startswith(f"{tmp_path / 'latin1.yaml'}:2:7: error: not UTF-8 text: byte 0xff at byte offset 17 "
                              "(invalid start byte)\n")
