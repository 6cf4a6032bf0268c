"""The host side writes each generation file with its planned mode, owned by the login, never through a link.

MindIE refuses a rank table or config.json not owned by its uid or with more than 0640; ATB's
safe_open a file writable by others or a symlink as the last component (reference §7.1).
"""
from __future__ import annotations

import os
import stat

import pytest

from launcher.host import upload


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_get_exactly_their_planned_mode_whatever_the_umask(tmp_path, umask):
    files = [("gen/ranktables/m.json", 0o640, b"{}"), ("gen/env/m.env", 0o600, b"x"),
             ("gen/bin/m.sh", 0o755, b"#!/bin/sh\n"), ("gen/gang.json", 0o644, b"{}")]
    old = os.umask(umask)
    try:
        assert upload.install_dir(files, "gen", str(tmp_path / "gens" / "g1"))
    finally:
        os.umask(old)
    for name, mode, body in files:
        st = os.lstat(tmp_path / "gens" / "g1" / name[4:])
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode, name
        assert st.st_uid == os.geteuid()


def test_a_symlink_in_place_of_a_file_is_never_written_through(tmp_path, monkeypatch):
    """If something put a link where a file goes (a race on the temp dir), the write fails
    instead of following it to a file elsewhere."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    real_makedirs = os.makedirs

    def makedirs_then_plant(path, *args, **kwargs):
        real_makedirs(path, *args, **kwargs)
        if str(path).endswith("ranktables"):
            os.symlink(victim, os.path.join(path, "m.json"))
    monkeypatch.setattr(upload.os, "makedirs", makedirs_then_plant)
    with pytest.raises(OSError):
        upload.install_dir([("gen/ranktables/m.json", 0o640, b"{}")], "gen", str(tmp_path / "g"))
    assert victim.read_bytes() == b"keep"
