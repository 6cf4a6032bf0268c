"""How the operator side runs a command on a host (OpenSSH, fabric/paramiko, or local), and on many at once.

Everything that touches a host goes through ``Transport.run``: an argv (quoted with
shlex.join for the remote shell), optional bytes on stdin, a timeout. Three implementations:
the system's OpenSSH client (the default where ``ssh`` is installed; one shared connection per
host, ControlMaster, opened ahead by ``warm_up`` while a command takes its lock), fabric's
Connection over paramiko (``--ssh-client paramiko``, where there is no OpenSSH client;
paramiko_transport.py), and this machine itself (``transport: local``). Host keys are always verified
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
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Protocol, Sequence, TypeVar

from ..core.errors import LauncherError
from ..core.model import Host
from .hostcmd import COMMAND_TIMEOUT, NO_SESSION, CommandResult, SshOptions, TransportError

DEFAULT_FORKS = 32


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
        # warm(): None (none asked), "pending" (queued), "running", "done"; the first run() waits for a running one
        self._warm: str | None = None
        self._warmed = threading.Condition()

    def _control(self) -> tuple[str | None, str]:
        """(the shared connections' directory, None for none; the prefix of this option set's sockets)."""
        o = self.options
        # a shared connection is reused only with the same ssh options: with another
        # known_hosts or config file, the host key is verified again on a new connection
        return _control_dir(o), hashlib.sha256(repr((o.config_file, o.known_hosts)).encode()).hexdigest()[:8]

    def shared_open(self) -> bool:
        """Any shared connection with these options is open (a socket of theirs exists)."""
        control, tag = self._control()
        try:
            return control is not None and any(n.startswith(tag) for n in os.listdir(control))
        except OSError:
            return False

    def warm_pending(self) -> None:
        """A warm() is queued for this host (warm_up): the first run() waits for it once it runs."""
        with self._warmed:
            if self._warm is None and _control_dir(self.options):
                self._warm = "pending"

    def warm(self) -> None:
        """Open the shared connection now (``ssh -f -N``: key exchange and login, no session; an
        existing one is reused), so the command's first call to this host finds it ready.
        Best effort: a host it cannot reach is reported by that first call."""
        with self._warmed:
            if self._warm != "pending":
                return
            self._warm = "running"
        try:
            subprocess.run(self._base() + ["-f", "-N", self.host.address], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=self.options.connect_timeout + 5, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            with self._warmed:
                self._warm = "done"
                self._warmed.notify_all()

    def _after_warm(self) -> None:
        with self._warmed:
            if self._warm == "pending":  # not started yet: this call connects by itself
                self._warm = "done"
            self._warmed.wait_for(lambda: self._warm != "running", timeout=self.options.connect_timeout + 10)

    def _base(self) -> list[str]:
        o = self.options
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                # a shared connection to a host that went away is noticed within ~9 s
                "-o", f"ConnectTimeout={int(o.connect_timeout)}", "-o", "ServerAliveInterval=3",
                "-o", "ServerAliveCountMax=3"]
        control, tag = self._control()
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
        self._after_warm()  # else a second connection, with its own key exchange, races the warm one
        cmd = self._base() + [self.host.address, "--", shlex.join(argv)]  # quoted for the remote shell
        try:
            proc = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout, start_new_session=True)  # Ctrl-C is for us, not it
        except subprocess.TimeoutExpired:
            raise TransportError(self.host.name, f"command timed out after {timeout:.0f} s: {argv[0]}") from None
        except OSError as exc:  # ssh gone from PATH since the flags were checked
            raise TransportError(self.host.name, f"cannot run ssh: {exc.strerror}") from None
        if proc.returncode == 255:  # ssh's own failure, not the remote command's
            err = proc.stderr.decode("utf-8", "replace")
            raise TransportError(self.host.name, self._explain(err), unreached=any(m in err for m in NO_SESSION))
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


def transport_for(host: Host, ssh: SshOptions = SshOptions()) -> Transport:
    if host.transport == "local":
        return LocalTransport(host)
    client = ssh.client
    if client == "auto":
        client = "openssh" if shutil.which("ssh") else "paramiko"
    if client == "openssh":
        return OpenSshTransport(host, ssh)
    from .paramiko_transport import SshTransport  # fabric and paramiko only when asked for
    return SshTransport(host, ssh)


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


def warm_up(transports: Iterable[Transport], forks: int = DEFAULT_FORKS) -> None:
    """Open the shared connections of ``transports`` in the background, at most ``forks`` at once
    (those that keep one: OpenSSH's), while the caller does something else first (takes the
    deployment lock on another host): the key exchanges overlap it instead of the first round.
    Not when connections with the same options are open already (kept from a command moments ago)."""
    todo = [t for t in transports if isinstance(t, OpenSshTransport) and _control_dir(t.options)]
    if any(t.shared_open() for t in todo[:1]):  # connections kept from a command moments ago: the
        return  # hosts' are open (they were opened and expire together); a warm-up would be one more ssh each
    for t in todo:
        t.warm_pending()
    if todo:
        threading.Thread(target=fan_out, args=(todo, lambda t: t.warm(), lambda t: t.host.name, forks),
                         daemon=True, name="ssh-warm-up").start()


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
