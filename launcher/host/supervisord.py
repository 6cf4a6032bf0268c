"""supervisord's life on this host: started (by systemd or forked from here), its config reread, shut down."""
from __future__ import annotations

import os
import sys
import time
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Any

from .orphans import stop_orphans
from .leftovers import stop_leftovers
from .supervisor_rpc import STOP_RPC_TIMEOUT, rpc, socket_path, supervisord_alive

# shutil and subprocess are imported where needed: `state` (every status) imports this module
# through the actions and never starts supervisord

SYSTEMD_UNIT_DIR = "/etc/systemd/system"
UNIT_TEMPLATE = "ascend-launcher@.service"
AGENT_GROUP = "launcher-agent"  # the [eventlistener:...] render.py writes


def systemd_usable() -> bool:
    """systemd runs here and we may manage system units (root): let it own supervisord."""
    import shutil
    return os.path.isdir("/run/systemd/system") and os.geteuid() == 0 and shutil.which("systemctl") is not None


def _own_file(rel: str) -> bytes | None:
    """A file shipped beside this module (in the runtime's site.zip, or a source tree)."""
    try:
        # mypy does not model a module's __loader__ (a zipimporter here when run from site.zip)
        return __loader__.get_data(os.path.join(os.path.dirname(__file__), rel))  # type: ignore[name-defined]
    except OSError:
        return None


def _start_with_systemd(root: str, wanted: bytes) -> None:
    import subprocess
    dest = os.path.join(SYSTEMD_UNIT_DIR, UNIT_TEMPLATE)
    try:
        with open(dest, "rb") as fh:
            same = fh.read() == wanted
    except OSError:
        same = False
    if not same:
        with open(dest + ".tmp", "wb") as fh:
            fh.write(wanted)
        os.replace(dest + ".tmp", dest)
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
    escaped = subprocess.run(["systemd-escape", "--path", root], check=True, capture_output=True, text=True,
                             timeout=30).stdout.strip()
    subprocess.run(["systemctl", "start", f"ascend-launcher@{escaped}.service"], check=True, timeout=120)


def start_supervisord(root: str) -> list[dict] | None:
    """Start ROOT's supervisord, after stopping what a dead one left running (never two copies
    of a rank on a host); returns those processes. One start at a time (`up` and the agent's
    recovery may race): under a lock, and not at all when one answers by then (None)."""
    import fcntl
    os.makedirs(os.path.join(root, "run"), mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(root, "run"), os.O_RDONLY | os.O_DIRECTORY)  # no lock file to create
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if supervisord_alive(root):
            return None
        stopped = stop_orphans(root) if died_here(root) else []
        _start_supervisord(root)
        return stopped
    finally:
        os.close(lock)  # the forked daemon closed its copy (_exec_supervisord closes every fd > 2)


def died_here(root: str) -> bool:
    """Whether a supervisord of ROOT may have died and left its programs running: its pidfile or
    socket is still there (a clean shutdown removes both, after stopping its programs, and every
    stop of the launcher's, `down` and `switch -`, sweeps what escaped its process groups). Else
    the orphan scan is skipped: it reads the environment of every process on the machine, which
    on a blank host of the testbed, whose hosts share one /proc, is every other host's too."""
    return any(os.path.lexists(os.path.join(root, "run", f)) for f in ("supervisord.pid", "supervisor.sock"))


def _start_supervisord(root: str) -> None:
    unit = _own_file(os.path.join("systemd", UNIT_TEMPLATE)) if systemd_usable() else None
    if unit is not None:
        _start_with_systemd(root, unit)
        _wait_alive(root)
        return
    # supervisord runs forked from this process, not in a new interpreter: what it imports that we
    # have already (json, socket, threading, ...) costs nothing, nor does a second Python start-up.
    # It daemonizes (fork, setsid, stdio to /dev/null), so it outlives this SSH session and the CLI.
    conf = os.path.join(root, "current", "supervisord.conf")
    site = os.path.join(root, "runtime", "current", "site.zip")
    sys.stdout.flush()
    sys.stderr.flush()
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns (os._exit)
        os.close(rd)
        _exec_supervisord(conf, site, wr)
    os.close(wr)
    said = b""
    while chunk := os.read(rd, 65536):  # EOF once the daemon has let go of its stdio
        said += chunk
    os.close(rd)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        lines = said.decode("utf-8", "replace").strip().splitlines()
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
        why = next((ln for ln in lines if ln.startswith("Error")), lines[-1] if lines else f"exit status {code}")
        raise RuntimeError(f"supervisord failed to start: {why}")
    _wait_alive(root)


def _exec_supervisord(conf: str, site: str, out: int) -> None:
    """In a forked child: become supervisord (which forks again and daemonizes); never returns."""
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in [int(f) for f in os.listdir("/proc/self/fd")] if os.path.isdir("/proc/self/fd") else []:
            if fd > 2:  # nothing of this call (the upload, sockets) leaks into the daemon
                try:
                    os.close(fd)
                except OSError:
                    pass
        # what its programs inherit, as when it ran as `python3 -m supervisor.supervisord` with this path
        os.environ["PYTHONPATH"] = site
        for name in [n for n in os.environ if n.startswith("SUPERVISOR_")]:  # started by the agent: not
            del os.environ[name]  # a program of the dead supervisord (orphans.py looks for that marker)
        sys.argv = ["supervisord", "-c", conf]
        _retitle(sys.argv)
        main(["-c", conf])  # returns in the daemon only when supervisord shuts down
        code = 0
    except SystemExit as exc:  # supervisord's own exits: usage errors (2), a bad config
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _retitle(argv: list[str]) -> None:
    """Show ``argv`` in ps / /proc/PID/cmdline instead of the bootstrap this process started as
    (rewrite the original argv area in place, as setproctitle does); best effort."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(os.path.basename(argv[0])[:15])
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (proc(5) fields 48, 49)
        title = "\0".join(argv).encode()[:end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(title + b"\0" * (end - start - len(title)))
    except (OSError, ValueError, IndexError):
        pass


def _wait_alive(root: str) -> None:
    deadline = time.time() + 30
    while not supervisord_alive(root):
        if time.time() > deadline:
            raise RuntimeError(f"supervisord did not come up on {socket_path(root)}")
        time.sleep(0.05)


def apply_config(root: str, new_runtime: bool = False) -> dict:
    """Reread the config and add the groups that are new. Nothing stops here: a changed group
    keeps running its old config until it is restarted (`start` loads the new one), and a
    removed one until `prune`; so a switch (and its rollback) never takes anything down."""
    server = rpc(root)
    added, changed, removed = server.supervisor.reloadConfig()[0]
    if AGENT_GROUP in changed:  # the agent is ours, not a workload: it follows the runtime at once
        server.supervisor.stopProcessGroup(AGENT_GROUP, True)
        server.supervisor.removeProcessGroup(AGENT_GROUP)
        added = [AGENT_GROUP, *added]
    elif new_runtime and AGENT_GROUP not in added:  # same config, another runtime: its code changed
        server.supervisor.stopProcessGroup(AGENT_GROUP, True)
        server.supervisor.startProcessGroup(AGENT_GROUP, False)
    for group in added:
        server.supervisor.addProcessGroup(group)
    return {"added": added, "changed": [g for g in changed if g != AGENT_GROUP], "removed": removed}


def reload_groups(server: Any, groups: list[str]) -> None:
    """Give ``groups`` the current generation's config (a changed group is replaced, stopped)."""
    added, changed, _ = server.supervisor.reloadConfig()[0]
    for group in groups:
        if group in changed:
            server.supervisor.stopProcessGroup(group, True)
            server.supervisor.removeProcessGroup(group)
        if group in changed or group in added:
            server.supervisor.addProcessGroup(group)


def shutdown(root: str) -> bool:
    """Stop supervisord and everything it runs (as groups), and wait until it has exited;
    False when none was running."""
    if not supervisord_alive(root):
        return False
    server = rpc(root, STOP_RPC_TIMEOUT)
    pid = server.supervisor.getPID()
    # every program first, then what outlived them while supervisord still holds it (a subreaper:
    # its subtree, unmarked descendants included), then supervisord itself
    server.supervisor.stopAllProcesses(True)
    stop_leftovers(root)
    server.supervisor.shutdown()
    _wait_gone(pid, 120)
    return True


def _gone(pid: int) -> bool:
    """Exited, also when not reaped yet (a zombie): its parent may be slow to wait for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not _gone(pid):
        time.sleep(0.05)


def recover(root: str) -> str:
    """Called by the agent when its supervisord went away (EOF or EPIPE on its event pipes): if
    that was a death (kill -9, the OOM killer) and not a deliberate shutdown, stop what it left
    running and start it again; what is recorded as wanted (state/desired.json) then shows up as
    not running to the new agent, which has those gangs restarted as a whole, within their budget.
    Where systemd runs supervisord, its unit does this (KillMode, Restart=). Says what it did."""
    from .state import desired, read_json, state_path
    if systemd_usable():
        return "systemd's unit starts it again"
    if not os.path.lexists(os.path.join(root, "current")):
        return "nothing is deployed here: not started again"
    # a gang its agent was restarting is stopped (not desired) here, but wanted: its intent says so
    gangs = read_json(state_path(root, "gang.json"), {})
    restarting = any(isinstance(st, dict) and st.get("intent") for st in gangs.values())
    if not (any(desired(root).values()) or restarting):  # `down` clears desired.json and intents first
        return "nothing here is wanted running: not started again"
    try:
        with open(os.path.join(root, "run", "supervisord.pid"), encoding="ascii") as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        pid = 0
    if pid:
        _wait_gone(pid, 30)  # EOF comes as it dies; its pid may linger a moment
        if not _gone(pid):  # it closed our pipe for another reason
            return f"supervisord (pid {pid}) still runs: not ours to restart"
    stopped = start_supervisord(root)
    if stopped is None:
        return f"supervisord (pid {pid}) died; another one was started meanwhile"
    return f"supervisord (pid {pid}) died; stopped {len(stopped)} of its processes still running " \
           f"({', '.join(str(o['pid']) for o in stopped) or 'none'}) and started supervisord again"


PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def become_subreaper(pidfile: str) -> bool:
    """Make this process (the daemon: the flag is not inherited across its fork) a child subreaper,
    so what a program leaves behind (kill -9 of its parent, setsid, a double fork) is re-parented
    to supervisord, not to init, and proctree.py finds it among supervisord's children; then
    record its pid in run/subreaper, beside the pidfile. False where the kernel refuses."""
    try:
        import ctypes  # not in every minimal Python: then proctree.py scans /proc instead
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
        path = os.path.join(os.path.dirname(pidfile), "subreaper")
        with open(path + ".tmp", "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
        os.replace(path + ".tmp", path)
        return True
    except (ImportError, OSError, AttributeError):
        return False


def _install_subreaper(supervisor_class: Any) -> None:
    """Every Supervisor.runforever (in the daemon, after it daemonized) first becomes a subreaper."""
    run = supervisor_class.runforever

    def runforever(self: Any) -> Any:
        if self.options.pidfile:
            become_subreaper(self.options.pidfile)
        return run(self)

    supervisor_class.runforever = runforever


def main(argv: list[str]) -> None:
    """supervisord with ``argv`` (its own options), acting at once on a child's exit (wakeup.py),
    and a subreaper of what its programs leave behind: how both the fork above and the systemd unit
    (`python3 -m launcher.host.supervisord`) run it."""
    from supervisor import supervisord  # type: ignore[import-untyped]  # supervisor ships no type hints

    from .wakeup import install, missing_internals
    missing = missing_internals()
    if missing:  # a supervisor outside the pinned range: say so, rather than run half-patched
        sys.exit(f"supervisord: this supervisor lacks what the launcher builds on ({', '.join(missing)}); "
                 "install the release range pyproject.toml pins")
    install(supervisord.Supervisor)
    _install_subreaper(supervisord.Supervisor)
    supervisord.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
