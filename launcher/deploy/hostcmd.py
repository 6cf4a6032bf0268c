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

    def __init__(self, host: str, message: str, remote_traceback: str | None = None, unreached: bool = False):
        self.host = host
        self.detail = message
        self.remote_traceback = remote_traceback  # of a host-side action that failed; shown under -v
        self.unreached = unreached  # no session was opened: the command did not run there at all
        super().__init__(f"host {host}: {message}")


# OpenSSH's own errors before any session is opened (so the command never ran on the host); not
# "Connection closed by ...", which also ends a session cut in the middle of a command
NO_SESSION = ("connect to host", "Could not resolve hostname", "Host key verification failed",
              "REMOTE HOST IDENTIFICATION HAS CHANGED", "No ED25519 host key is known", "Permission denied (")


@dataclass(frozen=True)
class SshOptions:
    config_file: str | None = None      # default ~/.ssh/config when it exists
    known_hosts: str | None = None      # default: from ssh config, else ~/.ssh/known_hosts
    connect_timeout: float = CONNECT_TIMEOUT
    client: str = "auto"                # openssh | paramiko | auto (openssh when `ssh` is installed)
    control_dir: str | None = None      # where OpenSSH keeps its shared connections
