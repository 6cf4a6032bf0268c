"""How the operator side runs a command on a host (OpenSSH, fabric/paramiko, or local), and on many at once.

Everything that touches a host goes through ``Transport.run``: an argv (quoted with
shlex.join for the remote shell), optional bytes on stdin, a timeout. Three implementations:
the system's OpenSSH client (the default where ``ssh`` is installed; one shared connection per
host, ControlMaster), fabric's Connection over paramiko (``--ssh-client paramiko``, where there is
no OpenSSH client), and this machine itself (``transport: local``). Host keys are always verified
against known_hosts (OpenSSH: StrictHostKeyChecking=yes and BatchMode; fabric: RejectPolicy on
every hop): an unknown or changed key is an error naming the host, never a prompt; the ssh
config (``~/.ssh/config`` or ``--ssh-config``) is honoured by both, ProxyJump included. ``fan_out`` runs a
call on many hosts, at most ``--forks`` (default 32) at once, and returns per-host results and
errors, never a half-silent failure (HostsFailed names every host that failed).
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence, TypeVar

from ..core.errors import LauncherError
from ..core.model import Host

DEFAULT_FORKS = 32
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


class Transport(Protocol):
    host: Host

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float = COMMAND_TIMEOUT) -> CommandResult: ...

    def close(self) -> None: ...


class LocalTransport:
    """This machine, no SSH: for `transport: local` hosts (the demo) and tests."""

    def __init__(self, host: Host):
        self.host = host

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float = COMMAND_TIMEOUT) -> CommandResult:
        try:
            proc = subprocess.run(list(argv), input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout, start_new_session=True)  # Ctrl-C is for us, not it
        except subprocess.TimeoutExpired:
            raise TransportError(self.host.name, f"command timed out after {timeout:.0f} s: {argv[0]}") from None
        except OSError as exc:
            raise TransportError(self.host.name, f"cannot run {argv[0]}: {exc.strerror}") from None
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SshOptions:
    config_file: str | None = None      # default ~/.ssh/config when it exists
    known_hosts: str | None = None      # default: from ssh config, else ~/.ssh/known_hosts
    connect_timeout: float = CONNECT_TIMEOUT
    client: str = "auto"                # openssh | paramiko | auto (openssh when `ssh` is installed)
    control_dir: str | None = None      # where OpenSSH keeps its shared connections


# A unix socket path is at most ~107 bytes; we add "/<8-hex options>" and OpenSSH
# "<40-hex %C>.<16 random>" while it creates the socket.
_MAX_CONTROL_DIR = 38


def _private_dir(path: str) -> bool:
    """Ours alone: a directory (not a symlink) owned by us, mode 0700 (created so if missing)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return False
    import stat
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def _control_dir(options: SshOptions) -> str | None:
    """Where shared connections live, or None (no sharing) when no short private dir exists."""
    candidates = [options.control_dir] if options.control_dir else []
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "ascend-launcher"))
    candidates += [os.path.join(os.path.expanduser("~"), ".cache", "ascend-launcher", "ssh"),
                   f"/tmp/ascend-launcher-ssh-{os.getuid()}"]
    for path in candidates:
        if len(path) <= _MAX_CONTROL_DIR and _private_dir(path):
            return path
    return None


class OpenSshTransport:
    """The system's OpenSSH client, one shared connection per host (ControlMaster).

    The connection outlives the CLI for a few minutes (ControlPersist), so `status` right
    after `up` pays no handshake. Host keys: StrictHostKeyChecking=yes, BatchMode (never a
    prompt); ~/.ssh/config applies as always with ssh.
    """

    PERSIST = 120

    def __init__(self, host: Host, options: SshOptions = SshOptions()):
        self.host = host
        self.options = options

    def _base(self) -> list[str]:
        o = self.options
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                # a shared connection to a host that went away is noticed within ~9 s
                "-o", f"ConnectTimeout={int(o.connect_timeout)}", "-o", "ServerAliveInterval=3",
                "-o", "ServerAliveCountMax=3"]
        control = _control_dir(o)
        # a shared connection is reused only with the same ssh options: with another
        # known_hosts or config file, the host key is verified again on a new connection
        tag = hashlib.sha256(repr((o.config_file, o.known_hosts)).encode()).hexdigest()[:8]
        argv += (["-o", "ControlMaster=auto", "-o", f"ControlPath={control}/{tag}%C",
                  "-o", f"ControlPersist={self.PERSIST}"] if control else ["-o", "ControlMaster=no"])
        if o.config_file:
            argv += ["-F", o.config_file]
        if o.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        ssh = self.host.ssh
        if ssh.user:
            argv += ["-l", ssh.user]
        if ssh.port != 22:
            argv += ["-p", str(ssh.port)]
        if ssh.identity_file:
            argv += ["-i", os.path.expanduser(ssh.identity_file), "-o", "IdentitiesOnly=yes"]
        return argv

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float = COMMAND_TIMEOUT) -> CommandResult:
        cmd = self._base() + [self.host.address, "--", shlex.join(argv)]  # quoted for the remote shell
        try:
            proc = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout, start_new_session=True)  # Ctrl-C is for us, not it
        except subprocess.TimeoutExpired:
            raise TransportError(self.host.name, f"command timed out after {timeout:.0f} s: {argv[0]}") from None
        except OSError as exc:  # ssh gone from PATH since the flags were checked
            raise TransportError(self.host.name, f"cannot run ssh: {exc.strerror}") from None
        if proc.returncode == 255:  # ssh's own failure, not the remote command's
            raise TransportError(self.host.name, self._explain(proc.stderr.decode("utf-8", "replace")))
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def _explain(self, err: str) -> str:
        addr = self.host.address
        known = self.options.known_hosts or "known_hosts"
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            return f"the host key of {addr} CHANGED since it was recorded in {known}; refusing to connect"
        if "Host key verification failed" in err or "No ED25519 host key is known" in err:
            return (f"{addr} is not in {known}; verify its key and add it (ssh-keyscan) - "
                    "unknown keys are never accepted")
        last = [ln for ln in err.strip().splitlines() if ln.strip()]
        return f"ssh to {addr}: {last[-1] if last else 'failed (exit 255)'}"

    def close(self) -> None:
        pass  # the shared connection expires by itself (ControlPersist)

    DISCONNECT_TIMEOUT = 5.0

    def disconnect(self) -> str | None:
        """End the shared connection now (after `down`); a warning when that did not work.

        A stuck control master can make `ssh -O exit` hang: it is killed with what it started
        (its own process group; no pipes that a child could hold open), and the connection
        then ends by itself (ControlPersist)."""
        if not _control_dir(self.options):
            return None
        try:
            proc = subprocess.Popen(self._base() + ["-O", "exit", self.host.address], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            return f"ssh -O exit could not run: {exc.strerror}"
        try:
            proc.wait(timeout=self.DISCONNECT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return (f"ssh -O exit did not finish in {self.DISCONNECT_TIMEOUT:.0f} s; killed it (the shared "
                    f"connection ends by itself within {self.PERSIST} s)")
        return None


class SshTransport:
    """OpenSSH servers on the far side, via fabric's Connection (paramiko underneath); one per host, reused.

    fabric resolves the host as OpenSSH would from the ssh config (HostName, User, Port,
    IdentityFile, ConnectTimeout, ProxyJump and ProxyCommand); the topology's user, port and
    identity file win. Host keys: fabric would add unknown keys (AutoAddPolicy) on every hop, so
    each hop's client gets the known_hosts file and RejectPolicy before it connects."""

    def __init__(self, host: Host, options: SshOptions = SshOptions()):
        self.host = host
        self.options = options
        self._conn: Any = None  # a fabric.Connection once connected
        self._lock = threading.Lock()

    def _connection(self) -> tuple[Any, str]:
        """(an unopened fabric.Connection, the known_hosts file its hops verify against)."""
        from fabric import Config, Connection
        config = Config(runtime_ssh_path=self.options.config_file) if self.options.config_file else Config()
        ssh = self.host.ssh
        identity = [os.path.expanduser(ssh.identity_file)] if ssh.identity_file else []
        conn = Connection(self.host.address, user=ssh.user or None, port=ssh.port if ssh.port != 22 else None,
                          config=config, connect_timeout=int(self.options.connect_timeout),
                          connect_kwargs={"allow_agent": True, "look_for_keys": not identity,
                                          "banner_timeout": self.options.connect_timeout,
                                          "auth_timeout": self.options.connect_timeout,
                                          **({"key_filename": identity} if identity else {})})
        known = self.options.known_hosts or (conn.ssh_config.get("userknownhostsfile") or "").split(" ")[0] or \
            "~/.ssh/known_hosts"
        return conn, os.path.expanduser(known)

    def _connect(self) -> Any:  # an open fabric.Connection
        import paramiko
        from fabric import Connection
        conn, known = self._connection()
        hop: Any = conn
        while isinstance(hop, Connection):  # the host and every ProxyJump hop before it
            if os.path.exists(known):
                hop.client.load_host_keys(known)
            hop.client.set_missing_host_key_policy(paramiko.RejectPolicy())  # never trust an unknown key
            hop = hop.gateway
        where = f"{conn.user}@{conn.host}:{conn.port}"
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise TransportError(self.host.name, f"the host key of {exc.hostname} CHANGED since it was recorded "
                                 f"in {known}; refusing to connect") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                name = str(exc).split()[1] if str(exc).startswith("Server ") else conn.host
                raise TransportError(self.host.name, f"{name.strip(chr(39))} is not in {known}; verify its "
                                     "key and add it (ssh-keyscan) - unknown keys are never accepted") from None
            raise TransportError(self.host.name, f"ssh to {where}: {exc}") from None
        except (socket.timeout, TimeoutError):
            raise TransportError(self.host.name, f"ssh to {conn.host}:{conn.port} timed out after "
                                 f"{self.options.connect_timeout:.0f} s") from None
        except OSError as exc:
            raise TransportError(self.host.name, f"ssh to {conn.host}:{conn.port}: {exc.strerror or exc}") from None
        conn.transport.set_keepalive(KEEPALIVE)
        return conn

    def client(self) -> Any:  # the connection's paramiko.SSHClient
        with self._lock:
            if self._conn is None or not self._conn.is_connected:
                self._conn = self._connect()
            return self._conn.client

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float = COMMAND_TIMEOUT) -> CommandResult:
        client = self.client()
        try:
            chan = client.get_transport().open_session(timeout=self.options.connect_timeout)
            chan.settimeout(timeout)
            chan.exec_command(shlex.join(argv))  # every argument quoted for the remote shell
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = _drain(chan, timeout)
            code = chan.recv_exit_status()
            chan.close()
        except (socket.timeout, TimeoutError):
            raise TransportError(self.host.name, f"command timed out after {timeout:.0f} s: {argv[0]}") from None
        except OSError as exc:
            raise TransportError(self.host.name, f"ssh session failed: {exc}") from None
        return CommandResult(code, out, err)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # and its ProxyJump hops
                self._conn = None


def _drain(chan: Any, timeout: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        if chan.recv_ready():
            out += chan.recv(65536)
        elif chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            break
        else:
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.002)
    return bytes(out), bytes(err)


def transport_for(host: Host, ssh: SshOptions = SshOptions()) -> Transport:
    if host.transport == "local":
        return LocalTransport(host)
    client = ssh.client
    if client == "auto":
        client = "openssh" if shutil.which("ssh") else "paramiko"
    return OpenSshTransport(host, ssh) if client == "openssh" else SshTransport(host, ssh)


T = TypeVar("T")
R = TypeVar("R")


class HostsFailed(LauncherError):
    """Some hosts failed; lists every one with its root cause."""

    def __init__(self, failures: dict[str, BaseException], what: str):
        self.failures = failures
        lines = [f"{what} failed on {len(failures)} host{'s' if len(failures) != 1 else ''}:"]
        lines += [f"  {host}: {_reason(exc)}" for host, exc in sorted(failures.items())]
        super().__init__("\n".join(lines))
        # the first bug (else the first failure) is the cause `-v` shows; every host's under -v too
        bugs = [exc for exc in failures.values() if not isinstance(exc, LauncherError)]
        self.__cause__ = next(iter(bugs or failures.values()), None)


def _reason(exc: BaseException) -> str:
    if not isinstance(exc, LauncherError):  # a bug, not a host's answer: its type says more than its text
        return f"{type(exc).__name__}: {exc} (a launcher bug; -v shows its traceback)"
    text = str(exc)
    prefix = "host "
    if isinstance(exc, TransportError) and text.startswith(prefix):
        return text.split(": ", 1)[1] if ": " in text else text
    return text


def fan_out(items: Iterable[T], fn: Callable[[T], R], key: Callable[[T], str],
            forks: int = DEFAULT_FORKS) -> tuple[dict[str, R], dict[str, BaseException]]:
    """Run fn on every item with at most ``forks`` at once; (results, failures) by key."""
    items = list(items)
    results: dict[str, R] = {}
    failures: dict[str, BaseException] = {}
    if not items:
        return results, failures
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(items)))) as pool:
        futures = {key(it): pool.submit(fn, it) for it in items}
        for k, fut in futures.items():
            try:
                results[k] = fut.result()
            except Exception as exc:  # collected per host, reported together
                failures[k] = exc
    return results, failures
