from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.testbed.fixtures", "tests.containers"]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short per-test directory (/tmp/lt-XXXXXXXX) in place of pytest's: tests deploy under it,
    and supervisord's socket (bound as SOCKET.<pid> first) under pytest's longer directories
    would pass the 107 bytes of a unix socket path, which `validate` refuses."""
    path = Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
