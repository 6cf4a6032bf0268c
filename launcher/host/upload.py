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


def digest(files: list[File]) -> str:
    """A generation's digest on one host: its files' names, modes and bytes (the operator computes
    it from what it renders, the host from what it has: deploy/apply.py, check_dir)."""
    import hashlib
    h = hashlib.sha256()
    for name, mode, body in sorted(files):
        h.update(f"{name}\0{mode & 0o777:o}\0{len(body)}\0".encode())
        h.update(body)
    return h.hexdigest()


def read_dir(path: str) -> list[File]:
    """The regular files under ``path`` as (relative name, mode, content); anything else is named too."""
    out: list[File] = []
    for top, dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(top, name)
            st = os.lstat(full)
            with open(full, "rb") as fh:
                out.append((os.path.relpath(full, path), st.st_mode, fh.read()))
    return out


def intact(path: str, expected: str) -> bool:
    """Whether the directory at ``path`` still holds exactly what has digest ``expected``."""
    try:
        return digest(read_dir(path)) == expected
    except OSError:
        return False


def fsync_dir(path: str) -> None:
    """A rename or a new entry in ``path`` survives a power loss only once the directory is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_dir(upload: list[File], prefix: str, final: str) -> bool:
    """Write ``prefix``/ files into a temp dir beside ``final``, synced, and rename: a half-written
    dir is never used, nor one a power loss truncated. An existing ``final`` is kept only while it
    holds exactly these files; else (damaged) it is replaced. Whether anything was written."""
    import shutil
    mine = [(name[len(prefix) + 1:], mode, body) for name, mode, body in upload if name.startswith(prefix + "/")]
    if not mine or os.path.isdir(final) and intact(final, digest(mine)):
        return False
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    dirs = {tmp}
    for name, mode, body in mine:
        path = os.path.join(tmp, name)
        if os.path.dirname(path) not in dirs:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            dirs.add(os.path.dirname(path))
        # a fresh file, never through a symlink (ATB refuses one as the last component), with the
        # planned mode whatever the login's umask (0640 ranktables, 0600 env files)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        os.fchmod(fd, mode & 0o777)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
    for d in sorted(dirs, key=len, reverse=True):  # each new entry, deepest first
        fsync_dir(d)
    if os.path.isdir(final):  # damaged: moved aside (a rename), replaced, then removed
        aside = f"{final}.damaged-{os.getpid()}"
        os.rename(final, aside)
        os.rename(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(parent)
    return True
