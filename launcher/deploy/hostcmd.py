"""What every transport shares: a command's result and error, the SSH options, the timeouts."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import LauncherError

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0
KEEPALIVE = 15


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class TransportError(LauncherError):
    """A host could not be reached or a command could not run there."""

    def __init__(self, host: str, message: str, remote_traceback: str | None = None):
        self.host = host
        self.detail = message
        self.remote_traceback = remote_traceback  # of a host-side action that failed; shown under -v
        super().__init__(f"host {host}: {message}")


@dataclass(frozen=True)
class SshOptions:
    config_file: str | None = None      # default ~/.ssh/config when it exists
    known_hosts: str | None = None      # default: from ssh config, else ~/.ssh/known_hosts
    connect_timeout: float = CONNECT_TIMEOUT
    client: str = "auto"                # openssh | paramiko | auto (openssh when `ssh` is installed)
    control_dir: str | None = None      # where OpenSSH keeps its shared connections
