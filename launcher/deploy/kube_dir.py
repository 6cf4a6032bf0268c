"""Writing `launcher export kubernetes`'s directory, with its `init-image/`.

The pure export's files, and what the rendezvous init image is built from: python3 and the
runtime zip `up` ships to hosts."""
from __future__ import annotations

import os
from typing import Mapping

from .runtime import build_runtime

CONTAINERFILE = b"""\
# The init image of `launcher export kubernetes`: python3 and the launcher's host side (site.zip,
# the runtime `launcher up` ships to hosts), which runs each pod's ranktable rendezvous.
#   podman build -t IMAGE init-image/ && podman push IMAGE   (or docker), then export with --init-image IMAGE
FROM docker.io/library/python:3.11-slim
COPY site.zip /opt/ascend-launcher/site.zip
"""


def init_image_files() -> dict[str, bytes]:
    return {"init-image/Containerfile": CONTAINERFILE, "init-image/site.zip": build_runtime().zip}


def write_export(files: Mapping[str, bytes], out_dir: str) -> int:
    """Write every file under DIR (a new or empty directory, checked by the caller); the count."""
    for rel, data in files.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    return len(files)
