"""Every command-line flag checked before anything is read, written or contacted: BadInput (exit 2).

A flag found wrong half-way (after an upload, a switch, a start) would leave hosts changed by
a command that then says its input was bad; so they are all checked here, first.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil

from ..core.errors import BadInput


def _writable_dir_path(path: str, flag: str) -> None:
    """``path`` is, or can become, a directory: the first existing part of it is a directory."""
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        where = "" if probe == os.path.abspath(path) else f" {probe}"
        raise BadInput(f"{flag} {path}:{where} is not a directory")


def check_flags(args: argparse.Namespace) -> None:
    """Raise BadInput for the first flag that is wrong; the command has not started yet."""
    at_least = [("forks", "--forks", 1), ("max_unavailable", "--max-unavailable", 1), ("lines", "--lines", 0)]
    for attr, flag, low in at_least:
        value = getattr(args, attr, None)
        if value is not None and value < low:
            raise BadInput(f"{flag} must be at least {low} (got {value})")
    for attr, flag in (("ready_timeout", "--ready-timeout"), ("interval", "--interval")):
        seconds = getattr(args, attr, None)
        if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
            raise BadInput(f"{flag} must be more than 0 seconds (got {seconds:g})")
    for attr, flag in (("ssh_config", "--ssh-config"), ("known_hosts", "--known-hosts")):
        path = getattr(args, attr, None)
        if path is not None and not os.path.isfile(path):
            why = "no such file" if not os.path.lexists(path) else "not a regular file"
            raise BadInput(f"{flag} {path}: {why}")
    if getattr(args, "ssh_client", None) == "openssh" and shutil.which("ssh") is None:
        raise BadInput("--ssh-client openssh: the OpenSSH client `ssh` is not installed (not on PATH); "
                       "install it or use --ssh-client paramiko")
    if getattr(args, "output", None) is not None:  # render -o
        _writable_dir_path(args.output, "-o")
    if getattr(args, "save_dir", None) is not None:  # pd-ranktable merge --save-dir
        _writable_dir_path(args.save_dir, "--save-dir")
