"""A multi-host testbed on one machine: network namespaces on a bridge, one real sshd each.

How it works (README.md beside this file has the long version):
- one bridge per testbed with its own /24 out of 10.213.0.0/16 (a /23 above 200 hosts); host i
  is 10.213.K.(10+i) (in a /23, the address 10 + i past 10.213.K.0);
  the namespaces get no default route, so nothing they send can leave the machine;
- every host is a netns with a veth on the bridge and its own OpenSSH server;
- `ip netns exec` gives sshd a private mount namespace; before exec'ing sshd we bind-mount
  per-host directories over /srv, /tmp, the test user's home and /etc/hosts, and `unshare
  --uts` gives the host its own hostname. Every SSH session inherits that view, and
  `Testbed.run` enters the same namespaces with nsenter;
- everything lives in one root-owned state dir with a state.json that lists every name and
  PID that `up` made, so `down` works from any process, also after a crash.
"""
from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import engine
from ._proc import (TestbedError, alive, kill, netns_pids, run_checked, run_parallel,
                    start_time, wait_until)

# Root-owned 0755 chain from / down: sshd's StrictModes accepts key files below it, and it is
# not /tmp, which every host gets its own copy of (the state dir must stay visible in hosts).
BASE_DIR = Path("/var/lib/launcher-testbed")
NET_PREFIX = "10.213"
TEST_USER = "lt"
SSHD = "/usr/sbin/sshd"
CLOCKSHIFT = Path(__file__).with_name("clockshift.c")  # built into the state dir by up(clocks=True)
SSH_PORT = 22
MAX_HOSTS = 256  # up to 200: .11 .. .210 of the testbed's /24; more: a /23 (host I at offset 10 + I)
HOSTS_PER_24 = 200  # above this a testbed takes a /23 (two /24s, both claimed on its bridge)
STATE_FILE = "state.json"
STATE_VERSION = 1
# Directories each host sees privately; BIND_TARGETS[key] is the path inside the host.
PRIVATE_DIRS = ("srv", "tmp", "home")
_TOOLS = ("ip", "ssh", "ssh-keygen", "nsenter", "unshare", "useradd", "runuser")
_STARTUP_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0

# Runs as the host's first process, inside its netns and fresh mount + UTS namespaces.
# The mounts are private to this mount namespace (ip netns exec makes it a slave of the
# machine's), so they vanish when the last process of the host exits. "$9" is empty, or with
# containers=True the commands that mount the machine's cgroup hierarchies on the fresh sysfs
# `ip netns exec` mounted (runc: "no cgroup mount found in mountinfo" without them).
_HOST_INIT = r"""set -e
hostname "$1"
mount --bind "$2" /srv
mount --bind "$3" /tmp
mount --bind "$4" "$5"
mount --bind "$6" /etc/hosts
eval "$9"
exec /usr/sbin/sshd -D -f "$7" -E "$8"
"""


@dataclass(frozen=True)
class Host:
    """One testbed host as the operator sees it. `root` is its private tree on the real disk."""

    index: int
    name: str
    address: str
    port: int
    user: str
    netns: str
    veth: str  # operator-side end of the host's link, a port of the bridge
    root: Path
    sshd_pid: int | None = None
    sshd_started: int | None = None  # /proc start time: guards against PID reuse

    @property
    def sshd_dir(self) -> Path:
        return self.root / "sshd"

    @property
    def sshd_log(self) -> Path:
        return self.sshd_dir / "sshd.log"

    def path(self, inside: str) -> Path:
        """The real-disk path of `inside` (an absolute path as the host sees it) for private dirs."""
        home = pwd.getpwnam(self.user).pw_dir
        p = Path(inside)
        for prefix, local in (("/srv", "srv"), ("/tmp", "tmp"), (home, "home")):
            if p == Path(prefix) or Path(prefix) in p.parents:
                return self.root / local / p.relative_to(prefix)
        raise ValueError(f"{inside} is not in a per-host directory (/srv, /tmp, {home})")


HostRef = Host | str | int


class Testbed:
    """N SSH hosts in network namespaces. Make one with `Testbed.up(n)`, find one with `load`."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state
        self._hosts = [_host_from_json(h) for h in state["hosts"]]
        # sshd processes this object started: waited on in down() so none stays <defunct>.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def up(cls, n: int, root: str | os.PathLike[str] | None = None, *, user: str = TEST_USER,
           containers: bool = False, clocks: bool = False) -> Testbed:
        """Create `n` hosts and wait until each sshd accepts connections. Cleans up if it fails.

        containers=True: every host can run `podman --runtime runc run --net host ...` (the
        machine's cgroup hierarchies are mounted in its mount namespace), `tb.engine` is a
        podman wrapper that labels what it runs with this testbed's id, and `down` removes
        every container carrying that label.

        clocks=True: every process a host's sshd starts (and what it starts: supervisord, agents,
        ranks) reads its wall clock through clockshift.c (LD_PRELOAD), shifted by the seconds
        `set_clock` writes (0 at first): a host whose clock is off, where all hosts share one
        kernel clock."""
        if clocks and shutil.which("gcc") is None:
            raise TestbedError("clocks=True needs gcc (apt-get install gcc)")
        problem = unavailable_reason()
        if problem:
            raise TestbedError(f"testbed needs root and network namespaces: {problem}")
        if not 1 <= n <= MAX_HOSTS:
            raise TestbedError(f"host count must be 1..{MAX_HOSTS}, got {n}")
        if containers and shutil.which(engine.PODMAN) is None:
            raise TestbedError("containers=True needs podman (apt-get install podman runc catatonit)")
        tb = cls(_plan_and_claim(n, root, user, containers, clocks))
        try:
            tb._build()
        except BaseException as exc:
            try:
                tb.down()  # a failed up leaves nothing behind, like a finished down
            except Exception as cleanup:
                exc.add_note(f"cleaning up after the failed up also failed: {cleanup}")
            raise
        return tb

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Testbed:
        """The testbed whose state dir is `root` (made by `up` in this or any other process)."""
        path = Path(root) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise TestbedError(f"no testbed state at {path}") from None
        if state.get("version") != STATE_VERSION:
            raise TestbedError(f"{path}: unknown state version {state.get('version')!r}")
        return cls(state)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- what tests and users read -------------------------------------------------------

    @property
    def id(self) -> str:
        return self._state["id"]

    @property
    def root(self) -> Path:
        return Path(self._state["root"])

    @property
    def hosts(self) -> list[Host]:
        return list(self._hosts)

    @property
    def user(self) -> str:
        return self._state["user"]

    @property
    def bridge(self) -> str:
        return self._state["bridge"]

    @property
    def gateway(self) -> str:
        """The operator side's address on the bridge."""
        return self._state["gateway"]

    @property
    def containers(self) -> bool:
        """Whether hosts can run containers (`up(..., containers=True)`)."""
        return bool(self._state.get("containers", False))

    @property
    def container_label(self) -> str:
        """"key=value" every container of this testbed carries (the engine wrapper adds it to
        run/create; tests calling podman themselves pass `--label` with it); `down` removes
        all containers with it. Container storage is shared by every host of the machine."""
        return f"{engine.TESTBED_LABEL}={self.id}"

    @property
    def engine(self) -> Path:
        """This testbed's podman wrapper: `podman --runtime runc` that adds `container_label`
        to run/create. In the state dir, so every host sees it at the same absolute path."""
        if not self.containers:
            raise TestbedError(f"testbed {self.id} was made without containers=True")
        return self.root / "bin" / "podman"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def identity_file(self) -> Path:
        return self.root / "client" / "id_ed25519"

    def host(self, ref: HostRef) -> Host:
        """A host by object, name ('h1') or 1-based index."""
        if isinstance(ref, Host):
            ref = ref.name
        for h in self._hosts:
            if h.name == ref or h.index == ref:
                return h
        raise TestbedError(f"no host {ref!r} in testbed {self.root}")

    # ---- acting on hosts -----------------------------------------------------------------

    def run(self, host: HostRef, argv: Sequence[str], *, user: str | None = None,
            **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` "on" a host without SSH: in its net, mount and UTS namespaces, as root
        or as `user`. Extra keywords go to subprocess.run (default: capture text output)."""
        h = self.host(host)
        if not alive(h.sshd_pid, h.sshd_started):
            raise TestbedError(f"{h.name}: its sshd (pid {h.sshd_pid}) is not running")
        prefix = ["nsenter", "-t", str(h.sshd_pid), "-m", "-n", "-u", "--wd=/", "--"]
        if user is not None:
            prefix += ["runuser", "-u", user, "--"]
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(prefix + list(argv), **kw)

    def ssh_argv(self, host: HostRef, command: str, *, user: str | None = None,
                 options: Sequence[str] = ()) -> list[str]:
        """The OpenSSH command line that runs shell `command` on a host via this testbed's config."""
        argv = ["ssh", "-F", str(self.ssh_config)]
        for opt in options:
            argv += ["-o", opt]
        if user is not None:
            argv += ["-l", user]
        return argv + [self.host(host).name, "--", command]

    def ssh(self, host: HostRef, command: str, *, user: str | None = None,
            options: Sequence[str] = (), timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run shell `command` on a host over real OpenSSH; returns the CompletedProcess."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.ssh_argv(host, command, user=user, options=options),
                              timeout=timeout, **kw)

    def isolate(self, host: HostRef) -> None:
        """Cut a host off the bridge (its veth goes down): nobody reaches it, it reaches nobody."""
        run_checked(["ip", "link", "set", self.host(host).veth, "down"])

    def restore(self, host: HostRef, timeout: float = 5.0) -> None:
        """Put an isolated host back on the bridge and wait until its sshd answers again."""
        h = self.host(host)
        run_checked(["ip", "link", "set", h.veth, "up"])
        if not wait_until(lambda: _accepts(h.address, h.port), timeout):
            raise TestbedError(f"{h.name} ({h.address}) does not answer {timeout}s after restore")

    def kill_sshd(self, host: HostRef) -> list[int]:
        """SIGKILL the host's sshd: the listener and every session's sshd (so the launcher's
        shared connection drops too), nothing else: what sessions started (supervisord, agents,
        ranks) keeps running and the host's network stays up. Returns the PIDs killed."""
        h = self.host(host)
        pids = [pid for pid in netns_pids([Path("/run/netns", h.netns)]).get(Path("/run/netns", h.netns), [])
                if _comm(pid).startswith("sshd")]
        for pid in pids:
            kill(pid, None)
        wait_until(lambda: not any(start_time(p) for p in pids), _STOP_TIMEOUT, 0.02)
        return pids

    def restart_sshd(self, host: HostRef, timeout: float = 10.0) -> None:
        """Start the host's sshd again after `kill_sshd`, in the namespaces its processes still
        hold (same mounts and hostname), or from scratch when nothing of the host is left."""
        h = self.host(host)
        left = netns_pids([Path("/run/netns", h.netns)]).get(Path("/run/netns", h.netns), [])
        if alive(h.sshd_pid, h.sshd_started):
            return
        if not left:  # nothing holds the host's mounts any more: build them again
            self._start_sshds([h])
        else:
            argv = ["nsenter", "-t", str(left[0]), "-m", "-n", "-u", "--wd=/", "--", SSHD, "-D",
                    "-f", str(h.sshd_dir / "sshd_config"), "-E", str(h.sshd_log)]
            with open(h.sshd_dir / "init.log", "ab") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, start_new_session=True)
            self._children[proc.pid] = proc  # nsenter execs sshd (no pid namespace: no fork)
            self._set_hosts([replace(x, sshd_pid=proc.pid, sshd_started=start_time(proc.pid)) if x.name == h.name
                             else x for x in self._hosts])
        if not wait_until(lambda: _accepts(h.address, h.port), timeout):
            raise TestbedError(f"{h.name}: sshd does not answer {timeout}s after its restart: {_log_tail(h)}")

    def spare_addresses(self) -> list[str]:
        """Addresses of this testbed's subnet that no host or the gateway uses (a /24's
        .211-.254; a /23's upper .11-.253), for `add_address`: device IPs (RoCE plane) that
        exist only inside the testbed's namespaces."""
        a, b, k, _ = self.gateway.split(".")
        if self._state["prefixlen"] == 24:
            return [f"{a}.{b}.{k}.{x}" for x in range(11 + HOSTS_PER_24, 255)]
        return [f"{a}.{b}.{int(k) + 1}.{x}" for x in range(11 + MAX_HOSTS - 256, 254)]  # .254 claims it

    def add_address(self, host: HostRef, address: str) -> None:
        """Give a host an extra IPv4 address on its eth0 (a device IP of a test topology).

        Only a spare address of this testbed's own subnet is accepted, so traffic to it stays on
        the testbed's bridge; it goes away with the host's namespace on `down`."""
        h = self.host(host)
        if address not in self.spare_addresses():
            raise TestbedError(f"{address} is not a spare address of testbed {self.id} "
                               f"({self.spare_addresses()[0]} .. {self.spare_addresses()[-1]})")
        taken = self._state.setdefault("extra_addresses", {})
        owner = next((name for name, addrs in taken.items() if address in addrs), None)
        if owner is not None:
            raise TestbedError(f"{address} is already an address of {owner}")
        taken.setdefault(h.name, []).append(address)
        _save_state(self._state)  # recorded before it exists, like everything `up` makes
        run_checked(["ip", "-n", h.netns, "addr", "add", f"{address}/{self._state['prefixlen']}", "dev", "eth0"])

    def status(self) -> list[dict[str, Any]]:
        """Per host: does its netns exist, is its sshd alive, is its link up."""
        return [
            {
                "name": h.name,
                "address": h.address,
                "netns": Path("/run/netns", h.netns).exists(),
                "sshd_pid": h.sshd_pid,
                "sshd_alive": alive(h.sshd_pid, h.sshd_started),
                "link": _operstate(h.veth),
            }
            for h in self._hosts
        ]

    # ---- teardown ------------------------------------------------------------------------

    def down(self, keep: bool = False) -> None:
        """Tear down exactly what `up` made; safe to call twice, from any process, after a crash.

        Order: kill every process in the hosts' namespaces (sshd, sessions and anything they
        left behind), then delete veths, bridge and namespaces, then the state dir.
        """
        if self.containers:
            self._remove_containers_in_hosts()
        self._kill_everything()
        if self.containers:  # what was left: records of containers whose processes we killed
            try:
                engine.remove_containers(self.container_label)
            except Exception as exc:
                raise TestbedError(f"removing the containers of testbed {self.id}: {exc}") from exc
        self._delete_links()
        if self.root.exists() and not keep:
            shutil.rmtree(self.root)

    def _remove_containers_in_hosts(self) -> None:
        """`podman rm -f` each running container of this testbed inside the host it runs on (its
        rootfs is mounted in that host's mount namespace): stopped there, podman cleans up its
        mounts, cgroups and runc state. Killed by SIGKILL instead, a container stays "Stopping"
        and its cgroups, runc state and storage dir stay behind even after a later `rm -f`."""
        if shutil.which(engine.PODMAN) is None:
            return
        try:
            ps = subprocess.run([engine.PODMAN, "--runtime", engine.RUNTIME, "ps", "--no-trunc",
                                 "--filter", f"label={self.container_label}", "--format", "{{.ID}} {{.Pid}}"],
                                capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return
        if ps.returncode != 0:
            return  # down must go on; the root-namespace pass reports what is left
        netns_of: dict[tuple[int, int], Host] = {}
        for h in self._hosts:
            try:
                st = os.stat(Path("/run/netns", h.netns))
            except FileNotFoundError:
                continue
            netns_of[(st.st_dev, st.st_ino)] = h
        by_host: dict[str, list[str]] = {}
        for line in ps.stdout.splitlines():
            cid, _, pid = line.partition(" ")
            try:
                st = os.stat(f"/proc/{int(pid)}/ns/net")
            except (ValueError, OSError):
                continue
            h = netns_of.get((st.st_dev, st.st_ino))
            if h is not None:
                by_host.setdefault(h.name, []).append(cid)
        procs = []
        for name, ids in by_host.items():
            h = self.host(name)
            if not alive(h.sshd_pid, h.sshd_started):
                continue  # no process known to be in the host's mount namespace: root-ns pass
            procs.append(subprocess.Popen(
                ["nsenter", "-t", str(h.sshd_pid), "-m", "-n", "-u", "--wd=/", "--", engine.PODMAN,
                 "--runtime", engine.RUNTIME, "rm", "-f", "-t", "0", *ids],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _kill_everything(self) -> None:
        for h in self._hosts:
            if h.sshd_pid is not None:
                kill(h.sshd_pid, h.sshd_started)
        files = [Path("/run/netns", h.netns) for h in self._hosts]

        def empty() -> bool:
            left = [pid for pids in netns_pids(files).values() for pid in pids]
            for pid in left:  # also what sessions started: daemons, nohup'd jobs
                kill(pid, None)
            return not left

        if not wait_until(empty, _STOP_TIMEOUT, 0.05):
            raise TestbedError(f"processes still running in testbed {self.root} after SIGKILL")
        for proc in self._children.values():
            proc.wait(timeout=_STOP_TIMEOUT)  # reap our own children: no <defunct> left
        self._children.clear()
        # Orphans (sshd started by another process) are reaped by init; that can take a while.
        if not wait_until(lambda: not any(alive(h.sshd_pid, h.sshd_started) for h in self._hosts),
                          _STOP_TIMEOUT, 0.05):
            raise TestbedError(f"sshd of testbed {self.root} still alive after SIGKILL")

    def _delete_links(self) -> None:
        # Deleting the operator-side veth removes its peer at once; a deleted netns would take
        # its veth along only asynchronously, and a test checking "no veth left" would race.
        lines = [f"link del {h.veth}" for h in self._hosts if _link_exists(h.veth)]
        if _link_exists(self.bridge):
            lines.append(f"link del {self.bridge}")
        lines += [f"netns del {h.netns}" for h in self._hosts if Path("/run/netns", h.netns).exists()]
        if lines:
            run_checked(["ip", "-force", "-batch", "-"], input="\n".join(lines) + "\n")

    # ---- building ------------------------------------------------------------------------

    def _build(self) -> None:
        ensure_user(self.user)
        self._make_files()
        if self.containers:
            engine.write_engine_wrapper(self.engine, {engine.TESTBED_LABEL: self.id})
        self._make_network()
        self._start_sshds()
        self._wait_ready()

    def _make_files(self) -> None:
        client = self.identity_file.parent
        client.mkdir(mode=0o700)
        keygens = [_keygen(self.identity_file, f"testbed-client@{self.id}")]
        for h in self._hosts:
            h.sshd_dir.mkdir(parents=True, mode=0o755)
            keygens.append(_keygen(h.sshd_dir / "ssh_host_ed25519_key", h.name))
        run_parallel(keygens)
        client_pub = (client / "id_ed25519.pub").read_text()
        _write(self.root / "authorized_keys.root", client_pub, 0o644)
        for h in self._hosts:
            self._make_host_tree(h, client_pub)
        _write(self.known_hosts, "".join(
            f"{h.name},{h.address} {_pubkey(h)}\n" for h in self._hosts), 0o644)
        _write(self.ssh_config, self._ssh_config_text(), 0o644)

    def _make_host_tree(self, h: Host, client_pub: str) -> None:
        pw = pwd.getpwnam(self.user)
        for sub in PRIVATE_DIRS:
            (h.root / sub).mkdir(mode=0o755)
        os.chmod(h.root / "tmp", 0o1777)
        os.chown(h.root / "srv", pw.pw_uid, pw.pw_gid)  # the test user deploys into /srv
        home = h.root / "home"
        os.chown(home, pw.pw_uid, pw.pw_gid)
        for rc in (".bashrc", ".profile", ".bash_logout"):  # pitfall 5: no heavy rc files
            _write(home / rc, "", 0o644, pw)
        (home / ".ssh").mkdir(mode=0o700)
        os.chown(home / ".ssh", pw.pw_uid, pw.pw_gid)
        _write(home / ".ssh" / "authorized_keys", client_pub, 0o600, pw)
        (h.root / "etc").mkdir(mode=0o755)
        _write(h.root / "etc" / "hosts", self._etc_hosts(), 0o644)
        _write(h.sshd_dir / "sshd_config", self._sshd_config_text(h), 0o644)
        if self._state.get("clocks"):
            _write(h.root / "clock", "+0\n", 0o644)
            if not (self.root / "clockshift.so").exists():
                run_checked(["gcc", "-shared", "-fPIC", "-O2", "-o", str(self.root / "clockshift.so"),
                             str(CLOCKSHIFT), "-ldl"])

    def _clock_env(self, h: Host) -> str:
        if not self._state.get("clocks"):
            return ""
        # only the wall clock, which hosts can disagree on, is off; monotonic clocks and sleeps are real
        return f"SetEnv LD_PRELOAD={self.root / 'clockshift.so'} TESTBED_CLOCK_FILE={h.root / 'clock'}\n"

    def set_clock(self, host: HostRef, seconds: int) -> None:
        """Set a host's wall clock ``seconds`` off (up(clocks=True)); returns once its processes'
        next clock read sees it (the shim re-reads the file on the first read in a new second)."""
        if not self._state.get("clocks"):
            raise TestbedError("set_clock needs a testbed made with clocks=True")
        h = self.host(host)
        tmp = h.root / "clock.tmp"
        tmp.write_text(f"{seconds:+d}\n")
        os.replace(tmp, h.root / "clock")
        written = time.time()
        while int(time.time()) == int(written):  # a read later in this second may still use the old value
            time.sleep(0.05)

    def _etc_hosts(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address}\t{h.name}" for h in self._hosts]
        return "\n".join(lines) + "\n"

    def _sshd_config_text(self, h: Host) -> str:
        return f"""\
# sshd for testbed host {h.name}; written by tests/testbed, removed by `down`.
ListenAddress {h.address}:{h.port}
HostKey {h.sshd_dir / 'ssh_host_ed25519_key'}
PidFile {h.sshd_dir / 'sshd.pid'}
LogLevel VERBOSE
# Key login only. UsePAM no: no PAM stack to configure (users must not be locked, pitfall 4).
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PermitRootLogin prohibit-password
AllowUsers {self.user} root
AuthorizedKeysFile .ssh/authorized_keys
# scp (SFTP in OpenSSH 9), paramiko/fabric put and ansible copy need sftp (pitfall 6).
Subsystem sftp internal-sftp
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
# Tests open many connections at once; the default 10:30:100 drops some of them.
MaxStartups 200:30:400
MaxSessions 64
{self._clock_env(h)}# Root's key lives in the state dir: the real /root/.ssh is never touched.
Match User root
    AuthorizedKeysFile {self.root / 'authorized_keys.root'}
"""

    def _ssh_config_text(self) -> str:
        blocks = [f"Host {h.name}\n    HostName {h.address}\n    Port {h.port}\n" for h in self._hosts]
        names = " ".join(h.name for h in self._hosts)
        addrs = " ".join(h.address for h in self._hosts)
        return f"""\
# OpenSSH client config for testbed {self.id}: ssh -F {self.ssh_config} h1
{''.join(blocks)}
Host {names} {addrs}
    User {self.user}
    IdentityFile {self.identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    HostKeyAlgorithms ssh-ed25519
    # The default sntrup/mlkem hybrids cost ~3x the CPU per handshake (pitfall 8).
    KexAlgorithms curve25519-sha256
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
"""

    def _make_network(self) -> None:
        s = self._state
        # The first `ip netns add` on a machine sets up /run/netns; do it alone to avoid a race.
        first, *rest = self._hosts
        run_checked(["ip", "netns", "add", first.netns])
        run_parallel(["ip", "netns", "add", h.netns] for h in rest)
        lines = []
        for h in self._hosts:
            lines.append(f"link add {h.veth} type veth peer name {_peer(h)} netns {h.netns}")
            lines.append(f"link set {h.veth} master {s['bridge']} up")
        run_checked(["ip", "-batch", "-"], input="\n".join(lines) + "\n")
        run_parallel(["ip", "-n", h.netns, "-batch", _write_batch(h, s["prefixlen"])] for h in self._hosts)

    def _start_sshds(self, only: Sequence[Host] | None = None) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir, pitfall 1
        Path("/srv").mkdir(mode=0o755, exist_ok=True)       # bind-mount target
        home = pwd.getpwnam(self.user).pw_dir
        names = {h.name for h in (only if only is not None else self._hosts)}
        started = []
        for h in self._hosts:
            if h.name not in names:
                started.append(h)
                continue
            argv = ["ip", "netns", "exec", h.netns, "unshare", "--uts", "--",
                    "/bin/sh", "-c", _HOST_INIT, "host-init", h.name,
                    str(h.root / "srv"), str(h.root / "tmp"), str(h.root / "home"), home,
                    str(h.root / "etc" / "hosts"), str(h.sshd_dir / "sshd_config"), str(h.sshd_log),
                    self._state.get("cgroup_mounts", "")]
            # New session: a Ctrl-C or hangup meant for the CLI or pytest does not reach the hosts.
            with open(h.sshd_dir / "init.log", "wb") as err:  # mount/hostname errors land here
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, start_new_session=True)
            # ip, unshare and sh all exec without forking, so this PID becomes sshd's.
            self._children[proc.pid] = proc
            started.append(replace(h, sshd_pid=proc.pid, sshd_started=start_time(proc.pid)))
        self._set_hosts(started)

    def _wait_ready(self) -> None:
        waiting = {h.name: h for h in self._hosts}
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while waiting:
            for name, h in list(waiting.items()):
                proc = self._children[h.sshd_pid]
                if proc.poll() is not None:
                    raise TestbedError(f"{name}: sshd exited {proc.returncode}: {_log_tail(h)}")
                if _accepts(h.address, h.port):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise TestbedError(f"sshd not accepting after {_STARTUP_TIMEOUT}s on {sorted(waiting)}")
            if waiting:
                time.sleep(0.01)

    def _set_hosts(self, hosts: list[Host]) -> None:
        self._hosts = hosts
        self._state["hosts"] = [_host_to_json(h) for h in hosts]
        _save_state(self._state)


# ---- planning: names, addresses, the state dir ----------------------------------------------

def unavailable_reason() -> str | None:
    """Why a testbed cannot be built on this machine, or None if it can."""
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if os.geteuid() != 0:
        return "not running as root"
    if missing:
        return "missing " + ", ".join(missing)
    if not Path("/proc/self/ns/net").exists():
        return "kernel has no network namespaces"
    return None


def _plan_and_claim(n: int, root: str | os.PathLike[str] | None, user: str,
                    containers: bool = False, clocks: bool = False) -> dict[str, Any]:
    """Pick an id and a free /24, write state.json and create the bridge, under a machine-wide
    lock so that two `up`s at once never pick the same subnet."""
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(BASE_DIR, 0o755)
    with _locked(BASE_DIR / ".lock"):
        tb_id = _fresh_id()
        path = Path(root).resolve() if root is not None else BASE_DIR / tb_id
        _check_state_dir(path)
        path.mkdir(mode=0o755, parents=True)
        os.chmod(path, 0o755)
        span = 1 if n <= HOSTS_PER_24 else 2
        subnet = _free_subnet(span)
        state = _plan(tb_id, path, n, subnet, user)
        if clocks:
            state["clocks"] = True
        if containers:
            state["containers"] = True
            state["cgroup_mounts"] = engine.cgroup_mount_script()
        _save_state(state)
        # a /23's upper /24 gets an address on the bridge too: it shows as taken to every other
        # `up` on this machine (also of an older testbed, which looks for /24s in use)
        claim = f"addr add {NET_PREFIX}.{subnet + 1}.254/23 dev {state['bridge']}\n" if span == 2 else ""
        try:
            run_checked(["ip", "-batch", "-"], input=(
                f"link add {state['bridge']} type bridge\n"
                f"addr add {state['gateway']}/{state['prefixlen']} dev {state['bridge']}\n{claim}"
                f"link set {state['bridge']} up\n"))
        except TestbedError:
            Testbed(state).down()
            raise
    return state


def _plan(tb_id: str, root: Path, n: int, subnet: int, user: str) -> dict[str, Any]:
    # Interface names must fit in 15 characters: "ltb" + 6 hex + "v" + up to 3 digits.
    hosts = [
        Host(index=i, name=f"h{i}", address=_address(f"{NET_PREFIX}.{subnet}.0", 10 + i), port=SSH_PORT,
             user=user, netns=f"ltb{tb_id}-h{i}", veth=f"ltb{tb_id}v{i}", root=root / "hosts" / f"h{i}")
        for i in range(1, n + 1)
    ]
    return {
        "version": STATE_VERSION,
        "id": tb_id,
        "root": str(root),
        "user": user,
        "bridge": f"ltb{tb_id}",
        "gateway": f"{NET_PREFIX}.{subnet}.1",
        "prefixlen": 24 if n <= HOSTS_PER_24 else 23,
        "created_by_pid": os.getpid(),
        "created_at": time.time(),
        "hosts": [_host_to_json(h) for h in hosts],
    }


def _fresh_id() -> str:
    taken = set(os.listdir("/run/netns")) if Path("/run/netns").exists() else set()
    taken |= set(os.listdir("/sys/class/net"))
    while True:
        tb_id = secrets.token_hex(3)
        if not any(name.startswith(f"ltb{tb_id}") for name in taken):
            return tb_id


def _address(base: str, offset: int) -> str:
    """The address ``offset`` past ``base`` (A.B.K.0), also past .255 into K+1."""
    a, b, k, _ = base.split(".")
    return f"{a}.{b}.{int(k) + offset // 256}.{offset % 256}"


def _free_subnet(span: int = 1) -> int:
    """The lowest K (even for a /23, span 2) such that no interface on this machine has an
    address in 10.213.K.0/24 .. 10.213.(K + span - 1).0/24."""
    out = run_checked(["ip", "-4", "-o", "addr", "show"]).stdout
    used = {int(m) for m in re.findall(rf"inet {re.escape(NET_PREFIX)}\.(\d+)\.\d+/", out)}
    for k in range(0, 257 - span, span):
        if not used & set(range(k, k + span)):
            return k
    raise TestbedError(f"no free /{25 - span} left in {NET_PREFIX}.0.0/16")


def _check_state_dir(path: Path) -> None:
    """Refuse state dirs that sshd's StrictModes would reject or that hosts would not see."""
    if (path / STATE_FILE).exists():
        raise TestbedError(f"{path} already holds a testbed; `down` it first")
    if path.exists() and any(path.iterdir()):
        raise TestbedError(f"{path} exists and is not empty")
    for hidden in ("/tmp", "/srv", "/home", "/etc/hosts"):
        if path == Path(hidden) or Path(hidden) in path.parents:
            raise TestbedError(f"{path}: state dir must not be under {hidden}, which every host "
                               "replaces with its own copy")
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise TestbedError(f"{path}: ancestor {parent} is not root-owned and 0755; sshd "
                               "StrictModes would refuse the keys below it")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _save_state(state: dict[str, Any]) -> None:
    """Write state.json atomically: a crash mid-write must not lose what `down` needs."""
    path = Path(state["root"]) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def _host_to_json(h: Host) -> dict[str, Any]:
    d = asdict(h)
    d["root"] = str(h.root)
    return d


def _host_from_json(d: dict[str, Any]) -> Host:
    return Host(**{**d, "root": Path(d["root"])})


def ensure_user(name: str) -> None:
    """Create the test user once per machine: unlocked ('*', pitfall 4), empty rc files (pitfall 5).

    The user stays after `down`: other testbeds on this machine may be using it.
    """
    with _locked(BASE_DIR / ".lock"):
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        run_checked(["useradd", "-m", "-p", "*", "-s", "/bin/bash", name])
        pw = pwd.getpwnam(name)
        for rc in (".bashrc", ".profile", ".bash_logout"):
            _write(Path(pw.pw_dir) / rc, "", 0o644, pw)


# ---- small helpers ---------------------------------------------------------------------------

def _peer(h: Host) -> str:
    return f"{h.veth}p"  # 15 chars at most; renamed to eth0 inside the host


def _write_batch(h: Host, prefixlen: int) -> str:
    """The host-side `ip -batch` file that configures a host's interfaces inside its netns."""
    path = h.sshd_dir / "net.batch"
    path.write_text(
        "link set lo up\n"
        f"link set {_peer(h)} name eth0\n"
        f"addr add {h.address}/{prefixlen} dev eth0\n"
        "link set eth0 up\n")  # no default route: nothing can leave the machine
    return str(path)


def _keygen(path: Path, comment: str) -> list[str]:
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def _pubkey(h: Host) -> str:
    kind, blob, *_ = (h.sshd_dir / "ssh_host_ed25519_key.pub").read_text().split()
    return f"{kind} {blob}"


def _write(path: Path, text: str, mode: int, owner: pwd.struct_passwd | None = None) -> None:
    path.write_text(text)
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _operstate(name: str) -> str:
    try:
        flags = int(Path("/sys/class/net", name, "flags").read_text(), 16)
    except FileNotFoundError:
        return "missing"
    return "up" if flags & 0x1 else "down"  # IFF_UP: what isolate/restore toggle


def _log_tail(h: Host, lines: int = 5) -> str:
    text = ""
    for f in (h.sshd_dir / "init.log", h.sshd_log):
        if f.exists():
            text += f.read_text(errors="replace")
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no log output)"


def list_testbeds(base: Path = BASE_DIR) -> list[Path]:
    """State dirs of testbeds made with the default location on this machine."""
    if not base.exists():
        return []
    return sorted(p.parent for p in base.glob(f"*/{STATE_FILE}"))


__all__ = ["BASE_DIR", "Host", "Testbed", "TestbedError", "ensure_user", "list_testbeds",
           "unavailable_reason"]
