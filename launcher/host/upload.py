"""What a host-side call is given on stdin (raw bytes, or prepare's upload as files) and installing it."""
from __future__ import annotations

import os
import sys

File = tuple[str, int, bytes]  # name, mode, content of a regular file

# prepare's upload as the bootstrap read and checked it (hostside.UPLOAD), handed over by hostside.main
UPLOAD: list[File] | None = None


def read_stdin() -> bytes:
    return sys.stdin.buffer.read()


def files() -> list[File]:
    """prepare's upload: what the bootstrap read and checked, else a tar read from stdin here."""
    if UPLOAD is not None:
        return UPLOAD
    import io
    import tarfile
    out: list[File] = []
    data = read_stdin()
    if not data:
        return out
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            body = tar.extractfile(member) if member.isfile() else None
            if body is None or member.name.startswith("/") or ".." in member.name.split("/"):
                raise ValueError(f"refusing archive member {member.name!r}")
            out.append((member.name, member.mode, body.read()))
    return out


def install_dir(upload: list[File], prefix: str, final: str) -> bool:
    """Write ``prefix``/ files into a temp dir beside ``final`` and rename: a half-written dir is never used."""
    import shutil
    mine = [(name[len(prefix) + 1:], mode, body) for name, mode, body in upload if name.startswith(prefix + "/")]
    if os.path.isdir(final) or not mine:
        return False
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    for name, mode, body in mine:
        path = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # a fresh file, never through a symlink (ATB refuses one as the last component), with the
        # planned mode whatever the login's umask (0640 ranktables, 0600 env files)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        os.fchmod(fd, mode & 0o777)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
    os.rename(tmp, final)
    return True
