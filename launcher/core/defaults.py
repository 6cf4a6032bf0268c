"""Defaults the CLI's flags show, in a module that imports nothing.

The parser is built by every command; importing these from the modules that use them would make
each command's start pay for the data model and the Kubernetes objects (~0.1 s)."""
from __future__ import annotations

READY_TIMEOUT = 120.0  # seconds what others depend on (or a rolled instance) may take to pass its probe
NPU_RESOURCE = "huawei.com/Ascend910"  # the Ascend device plugin's resource (Atlas 800I A2: Ascend910)
INIT_IMAGE = "ascend-launcher-init:latest"  # the rendezvous init image (export's init-image/)
