"""The launcher's code that runs on each host (stdlib only; the host needs nothing but python3).

Invoked by the operator side over SSH (or locally) as
``python3 -m launcher.host.hostside ACTION ROOT ...`` with PYTHONPATH at the deployment's runtime,
it answers with one JSON object on stdout. ROOT is ``<deploy_dir>/<deployment>/<host>``:

    ROOT/current -> gens/<generation>     the running generation (switched atomically)
    ROOT/gens/<generation>/               files rendered for this host
    ROOT/runtime/current -> <runtime id>  site.zip (launcher + supervisor packages), bin/
    ROOT/run/                             supervisor.sock (0700 dir), supervisord.pid
    ROOT/logs/                            one log per program, rotated by supervisord
    ROOT/state/                           the agent's gang state (restarts, FAILED reasons)
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Any

# io, shutil and subprocess are imported where needed: `state` (every status) skips them



# --- state files shared with the agent ------------------------------------------------------
def state_path(root: str, name: str) -> str:
    return os.path.join(root, "state", name)


def read_json(path: str, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def write_json(path: str, doc: Any, mode: int = 0o644) -> None:
    """Write-then-rename, so a reader never sees half a file."""
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


_desired_lock = threading.Lock()


def set_desired(root: str, group: str, run: bool) -> None:
    """Record whether a group should run: the agent restarts only groups that should."""
    _update_state(root, "desired.json", {group: run})


def desired(root: str) -> dict[str, bool]:
    return read_json(state_path(root, "desired.json"), {})


def secret(root: str) -> bytes | None:
    try:
        with open(state_path(root, "secret"), "rb") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class RpcError(Exception):
    """supervisord answered with an XML-RPC fault, or not with XML-RPC at all."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def _xml_param(value: Any) -> str:
    if value is None:
        return "<nil/>"
    if isinstance(value, bool):
        return f"<boolean>{int(value)}</boolean>"
    if isinstance(value, int):
        return f"<int>{value}</int>"
    if isinstance(value, float):
        return f"<double>{value!r}</double>"
    if isinstance(value, str):
        return "<string>" + value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</string>"
    raise TypeError(f"no XML-RPC marshalling for {type(value).__name__}")


_SCALARS: dict[str, Any] = {"int": int, "i4": int, "i8": int, "boolean": lambda t: t.strip() == "1",
                            "double": float, "string": str, "dateTime.iso8601": str}


def _xml_result(payload: bytes) -> Any:
    """The value of a methodResponse (or RpcError for a fault). The subset supervisord sends:
    scalars, nil, base64, arrays and structs, read with expat (cheap to import)."""
    from xml.parsers import expat
    out: list[Any] = []
    containers: list[Any] = []  # open arrays (list) and structs (dict) ...
    names: list[str] = []       # ... and each open struct's current member name
    typed: list[bool] = []      # per open <value>: did a typed child give it its value?
    text: list[str] = []
    fault = False

    def emit(value: Any) -> None:
        if typed:
            typed[-1] = True
        if not containers:
            out.append(value)
        elif isinstance(containers[-1], list):
            containers[-1].append(value)
        else:
            containers[-1][names[-1]] = value

    def start(tag: str, attrs: dict) -> None:
        nonlocal fault
        text.clear()
        if tag == "value":
            typed.append(False)
        elif tag == "array":
            containers.append([])
        elif tag == "struct":
            containers.append({})
            names.append("")
        elif tag == "fault":
            fault = True

    def end(tag: str) -> None:
        body = "".join(text)
        if tag in _SCALARS:
            emit(_SCALARS[tag](body))
        elif tag == "nil":
            emit(None)
        elif tag == "base64":
            import base64
            emit(base64.b64decode(body))
        elif tag == "name":
            names[-1] = body
        elif tag == "array":
            emit(containers.pop())
        elif tag == "struct":
            names.pop()
            emit(containers.pop())
        elif tag == "value" and not typed.pop():
            emit(body)  # <value>text</value>: a string

    parser = expat.ParserCreate()
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(payload, True)
    except expat.ExpatError as exc:
        raise RpcError(f"supervisord sent no valid XML-RPC: {exc}") from None
    if fault:
        f = out[0] if out and isinstance(out[0], dict) else {}
        raise RpcError(str(f.get("faultString", "fault")), f.get("faultCode"))
    if len(out) != 1:
        raise RpcError("supervisord sent no result")
    return out[0]


class Supervisor:
    """XML-RPC to supervisord over its unix socket (it never listens on a TCP port): one
    HTTP/1.0 request per call. Written here rather than with xmlrpc.client, which imports
    http.client and email and costs every host-side call and the agent ~40 ms of CPU at start."""

    def __init__(self, path: str, timeout: float = 30.0, method: str = ""):
        self._path, self._timeout, self._method = path, timeout, method

    def __getattr__(self, name: str) -> "Supervisor":
        if name.startswith("_"):
            raise AttributeError(name)
        return Supervisor(self._path, self._timeout, f"{self._method}.{name}" if self._method else name)

    def __call__(self, *params: Any) -> Any:
        body = ("<?xml version='1.0'?><methodCall><methodName>" + self._method + "</methodName><params>"
                + "".join(f"<param><value>{_xml_param(p)}</value></param>" for p in params)
                + "</params></methodCall>").encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self._timeout)
            sock.connect(self._path)
            sock.sendall(b"POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            chunks = []
            while chunk := sock.recv(65536):  # HTTP/1.0: the answer ends when supervisord closes
                chunks.append(chunk)
        head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split()[1:2] != ["200"]:
            raise RpcError(f"supervisord answered {status or 'nothing'!r} to {self._method}")
        return _xml_result(payload)


# A stop returns once supervisord has the group down: up to stopwaitsecs (30 s, render.py) and
# then the SIGKILL; the call must outlast that, or a slow rank turns into a failed stop
STOP_RPC_TIMEOUT = 75.0


def socket_path(root: str) -> str:
    return os.path.join(root, "run", "supervisor.sock")


def rpc(root: str, timeout: float = 30.0) -> Any:
    return Supervisor(socket_path(root), timeout)


def supervisord_alive(root: str) -> bool:
    try:
        return rpc(root, 5.0).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, RpcError):
        return False


def current_generation(root: str) -> str | None:
    try:
        return os.path.basename(os.readlink(os.path.join(root, "current")))
    except OSError:
        return None


def read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "current", "manifest.json"), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_gang_state(root: str) -> dict:
    return read_json(state_path(root, "gang.json"), {})


def programs_info(root: str) -> list[dict] | None:
    """Every program's state in one RPC; None when supervisord does not answer."""
    try:
        infos = rpc(root, 10.0).supervisor.getAllProcessInfo()
    except (OSError, RpcError):
        return None
    now = time.time()
    out = []
    for p in infos:
        out.append({"name": p["name"], "group": p["group"], "state": p["statename"], "pid": p["pid"] or None,
                    "uptime": round(now - p["start"], 1) if p["statename"] == "RUNNING" and p["start"] else None,
                    "exitstatus": p["exitstatus"], "spawnerr": p["spawnerr"] or None})
    return out


def act_state(root: str, args: list[str]) -> dict:
    state = current_state(root)
    state["runtime_missing"] = "--runtime-missing" in args
    return state


def current_state(root: str) -> dict:
    """Everything the operator side needs to decide and report, read in one go."""
    key = secret(root)
    programs = programs_info(root) if os.path.exists(socket_path(root)) else None
    return {"root": root, "secret_id": hashlib.sha256(key).hexdigest()[:12] if key else None,
            "generation": current_generation(root), "supervisord": programs is not None,
            "manifest": read_manifest(root), "programs": programs or [], "gang": read_gang_state(root),
            "started": read_json(state_path(root, "started.json"), {}),
            "waiting": read_json(state_path(root, "waiting.json"), {}), "time": time.time()}


def write_snapshot(root: str) -> None:
    """state/snapshot.json: the state as of the last change, so `status` and a no-change `up`
    read one file instead of starting Python on the host. Kept by the agent (on every process
    state change) and by each action that changes something; trusted only while the agent lives."""
    if os.path.isdir(os.path.join(root, "state")):
        write_json(state_path(root, "snapshot.json"), current_state(root))


STDIN: bytes | None = None  # set by the bootstrap when it has already read stdin
# prepare's upload as (name, mode, content) of regular files, already read and checked by the
# bootstrap (remote.BOOTSTRAP); None when run otherwise, then stdin is read here
UPLOAD: list[tuple[str, int, bytes]] | None = None


def _lazy():
    global io, shutil, subprocess
    import io, shutil, subprocess  # noqa: E401


def _stdin() -> bytes:
    return STDIN if STDIN is not None else sys.stdin.buffer.read()


def _upload() -> list[tuple[str, int, bytes]]:
    if UPLOAD is not None:
        return UPLOAD
    import tarfile
    out = []
    data = _stdin()
    if not data:
        return out
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in member.name.split("/"):
                raise ValueError(f"refusing archive member {member.name!r}")
            out.append((member.name, member.mode, tar.extractfile(member).read()))
    return out


def _install_dir(files: list[tuple[str, int, bytes]], prefix: str, final: str) -> bool:
    """Write ``prefix``/ files into a temp dir beside ``final`` and rename: a half-written dir is never used."""
    files = [(name[len(prefix) + 1:], mode, body) for name, mode, body in files if name.startswith(prefix + "/")]
    if os.path.isdir(final) or not files:
        return False
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, mode=0o755)
    for name, mode, body in files:
        path = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o777)  # 0600 env files stay so
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
    os.rename(tmp, final)
    return True


def act_prepare(root: str, args: list[str]) -> dict:
    """Upload a generation without touching what runs. stdin: a tar with gen/ (its files) and,
    when the host needs it, secret (the deployment's agent key).

    With --switch=RUNTIME (only for a host with nothing deployed, so nothing to protect) it also
    switches to the generation and starts --start= groups, as `switch` does: one call, one
    Python start and one round trip for a cold host. `switch -` undoes it."""
    generation = args[0]
    for sub, mode in (("run", 0o700), ("logs", 0o755), ("state", 0o755), ("gens", 0o755)):
        os.makedirs(os.path.join(root, sub), mode=mode, exist_ok=True)
    os.chmod(os.path.join(root, "run"), 0o700)
    files = _upload()
    uploaded = _install_dir(files, "gen", os.path.join(root, "gens", generation))
    key = next((body for name, _, body in files if name == "secret"), None)
    if key is not None:
        _write_secret(root, key.strip(), "--force-secret" in args)
    runtime = next((a[len("--switch="):] for a in args if a.startswith("--switch=")), None)
    if runtime:
        switched = act_switch(root, [generation, runtime, *(a for a in args if a.startswith("--start="))])
        return {"generation": generation, "uploaded": uploaded, "switched": switched}
    write_snapshot(root)
    return {"generation": generation, "uploaded": uploaded}


def _write_secret(root: str, data: bytes, force: bool) -> None:
    path = state_path(root, "secret")
    if not data or (secret(root) is not None and not force):
        return
    fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(f"{path}.tmp", path)


def _swap_symlink(link: str, target: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # rename(2) over the old link: atomic


SYSTEMD_UNIT_DIR = "/etc/systemd/system"
UNIT_TEMPLATE = "ascend-launcher@.service"


def _systemd_usable() -> bool:
    """systemd runs here and we may manage system units (root): let it own supervisord."""
    return os.path.isdir("/run/systemd/system") and os.geteuid() == 0 and shutil.which("systemctl") is not None


def _own_file(rel: str) -> bytes | None:
    """A file shipped beside this module (in the runtime's site.zip, or a source tree)."""
    try:
        return __loader__.get_data(os.path.join(os.path.dirname(__file__), rel))  # type: ignore[name-defined]
    except OSError:
        return None


def _start_with_systemd(root: str, wanted: bytes) -> None:
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


def _start_supervisord(root: str) -> None:
    unit = _own_file(os.path.join("systemd", UNIT_TEMPLATE)) if _systemd_usable() else None
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
        sys.argv = ["supervisord", "-c", conf]
        _retitle(sys.argv)
        from supervisor import supervisord
        supervisord.main(["-c", conf])  # returns in the daemon only when supervisord shuts down
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


def _apply_config(root: str, new_runtime: bool = False) -> dict:
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


AGENT_GROUP = "launcher-agent"  # the [eventlistener:...] render.py writes


def _reload_groups(server: Any, groups: list[str]) -> None:
    """Give ``groups`` the current generation's config (a changed group is replaced, stopped)."""
    added, changed, _ = server.supervisor.reloadConfig()[0]
    for group in groups:
        if group in changed:
            server.supervisor.stopProcessGroup(group, True)
            server.supervisor.removeProcessGroup(group)
        if group in changed or group in added:
            server.supervisor.addProcessGroup(group)


def act_prune(root: str, args: list[str]) -> dict:
    """Stop and remove the groups the current generation no longer has."""
    server = rpc(root, STOP_RPC_TIMEOUT)
    removed = server.supervisor.reloadConfig()[0][2]
    for group in removed:
        set_desired(root, group, False)  # a deliberate stop: the agent must not restart it
        server.supervisor.stopProcessGroup(group, True)
        server.supervisor.removeProcessGroup(group)
    _update_state(root, "started.json", {g: None for g in removed})
    write_snapshot(root)
    return {"removed": removed}


def _update_state(root: str, name: str, changes: dict) -> None:
    """Merge ``changes`` into state/NAME (a None value deletes the key); no write when that
    changes nothing (every file a cold host creates costs it a create under the journal)."""
    with _desired_lock:
        path = state_path(root, name)
        doc = read_json(path, {})
        before = dict(doc)
        for k, v in changes.items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        if doc != before:
            write_json(path, doc)


def act_wait(root: str, args: list[str]) -> dict:
    """Record that groups wait for dependencies that are not ready (stdin: {group: {on, reason}});
    `status` shows it until the group is started."""
    marks = json.loads(_stdin() or b"{}")
    _update_state(root, "waiting.json", {g: {**m, "since": time.time()} for g, m in marks.items()})
    write_snapshot(root)
    return {"waiting": sorted(marks)}


def act_switch(root: str, args: list[str]) -> dict:
    """Make GENERATION current and bring supervisord in line; changed groups end up stopped."""
    generation, runtime_id = args[0], args[1]
    previous = current_generation(root)
    if generation == "-":  # undo a first switch: there was no previous generation, so nothing of
        # this one stays: not `current`, not the supervisord it started, nor what that runs
        link = os.path.join(root, "current")
        if os.path.lexists(link):
            os.unlink(link)
        stopped = act_down(root, [])["stopped_supervisord"]
        for name in ("started.json", "waiting.json"):
            if os.path.lexists(state_path(root, name)):
                os.unlink(state_path(root, name))
        return {"previous": previous, "generation": None, "stopped_supervisord": stopped}
    runtime_link = os.path.join(root, "runtime", "current")
    old_runtime = os.readlink(runtime_link) if os.path.islink(runtime_link) else None
    _swap_symlink(runtime_link, runtime_id)
    _swap_symlink(os.path.join(root, "current"), os.path.join("gens", generation))
    if not supervisord_alive(root):
        _start_supervisord(root)
        changes = {"added": [], "changed": [], "removed": [], "started_supervisord": True}
    else:
        changes = _apply_config(root, new_runtime=old_runtime not in (None, runtime_id))
    start = [g for a in args[2:] if a.startswith("--start=") for g in a[len("--start="):].split(",") if g]
    if start:  # owners that run nowhere yet start right away: one round trip less
        changes["started"] = act_start(root, start, snapshot=False)  # one snapshot, below
    write_snapshot(root)
    return {"previous": previous, "generation": generation, **changes}


def act_start(root: str, args: list[str], snapshot: bool = True) -> dict:
    """Start whole groups (an instance's ranks on this host) at once, each with the current
    generation's config; returns when spawned. A deliberate start gives the gang a fresh
    restart budget (clears FAILED) and ends any wait recorded for it."""
    server = rpc(root, STOP_RPC_TIMEOUT)
    _reload_groups(server, args)
    _update_state(root, "gang.json", {g: None for g in args})
    _update_state(root, "waiting.json", {g: None for g in args})
    hashes = {p["owner"]: p["owner_hash"] for p in (read_manifest(root) or {}).get("programs", [])}
    _update_state(root, "started.json", {g: {"generation": current_generation(root), "owner_hash": hashes.get(g)}
                                         for g in args})
    _update_state(root, "desired.json", {g: True for g in args})
    started_at = time.time()
    for group in args:
        server.supervisor.startProcessGroup(group, False)
    if snapshot:
        write_snapshot(root)
    return {"started_at": started_at, "groups": args}


def act_stop(root: str, args: list[str]) -> dict:
    server = rpc(root, STOP_RPC_TIMEOUT)
    _update_state(root, "waiting.json", {g: None for g in args})  # a deliberate stop ends any wait
    for group in args:
        set_desired(root, group, False)  # before stopping: the agent must not see a failure
        server.supervisor.stopProcessGroup(group, True)
    write_snapshot(root)
    return {"stopped": args}


def act_secret(root: str, args: list[str]) -> dict:
    """Install the deployment's agent key (stdin) or, with --reveal, hand it to the operator."""
    if "--reveal" in args:
        key = secret(root)
        return {"secret": key.decode() if key else None}
    os.makedirs(os.path.join(root, "state"), exist_ok=True)
    _write_secret(root, _stdin().strip(), "--force" in args)
    write_snapshot(root)
    key = secret(root)
    return {"secret_id": hashlib.sha256(key).hexdigest()[:12] if key else None}


def act_down(root: str, args: list[str]) -> dict:
    purge = "--purge" in args
    stopped = False
    if os.path.isdir(os.path.join(root, "state")):
        write_json(state_path(root, "desired.json"), {})
    if supervisord_alive(root):
        server = rpc(root, 60.0)
        pid = server.supervisor.getPID()
        server.supervisor.shutdown()  # stops every program (as groups) before it exits
        _wait_gone(pid, 120)
        stopped = True
    for leftover in (os.path.join(root, "run", "supervisor.sock"), os.path.join(root, "run", "supervisord.pid"),
                     state_path(root, "snapshot.json"), state_path(root, "agent.pid")):
        if os.path.lexists(leftover):
            os.unlink(leftover)
    if purge and os.path.isdir(root):
        shutil.rmtree(root)
    return {"stopped_supervisord": stopped, "purged": purge}


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


def act_logs(root: str, args: list[str]) -> dict:
    """Last lines of each named program's log (streaming with -f is done by the caller with tail)."""
    lines = int(args[0])
    out = {}
    for program in args[1:]:
        path = os.path.join(root, "logs", f"{os.path.basename(program)}.log")
        out[program] = tail(path, lines)
    return {"logs": out}


def tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:] if lines else []


LINKCHECK = "launcher-linkcheck"


def linkcheck_binary(root: str) -> str:
    """The checker for this host's CPU: built here from the shipped C source, once per runtime."""
    # the runtime this code was loaded from (runtime/<id>/site.zip/launcher/host/hostside.py):
    # the new runtime is checked before it becomes current
    rt = os.path.abspath(__file__)
    for _ in range(4):
        rt = os.path.dirname(rt)
    native = os.path.join(rt, "native")
    binary = os.path.join(native, "build", LINKCHECK)
    if os.access(binary, os.X_OK):
        return binary
    cc = next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        raise RuntimeError(f"cannot build {LINKCHECK}: no C compiler (cc, gcc or clang) on this host; "
                           f"install one, or put a prebuilt {LINKCHECK} for {os.uname().machine} at {binary}")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    sources = _native_sources(native)
    tmp = f"{binary}.tmp-{os.getpid()}"
    # No -Werror here: a newer compiler's new warning must not break a host.
    proc = subprocess.run([cc, "-std=c99", "-D_GNU_SOURCE", "-O2", "-pthread", "-o", tmp, *sources, "-ldl"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building {LINKCHECK} failed: {proc.stderr.strip().splitlines()[-1:]}")
    os.replace(tmp, binary)
    return binary


def _native_sources(native: str) -> list[str]:
    """The C sources, written out of site.zip into ``native`` (only here: most hosts never build)."""
    import zipfile
    archive = getattr(__loader__, "archive", None)  # type: ignore[name-defined]
    if archive is None:  # run from a source tree
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native")
        return sorted(os.path.join(src, n) for n in os.listdir(src) if n.endswith(".c"))
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith("launcher/host/_native/") and name.endswith((".c", ".h")):
                with open(os.path.join(native, os.path.basename(name)), "wb") as fh:
                    fh.write(zf.read(name))
    return sorted(os.path.join(native, n) for n in os.listdir(native) if n.endswith(".c"))


def act_linkcheck(root: str, args: list[str]) -> dict:
    """Run the link checker with the JSON spec on stdin; args: HCCN_TOOL and DCMI_LIB paths, '-' for the default."""
    spec = _stdin()
    env = dict(os.environ)
    for value, var in zip(args, ("LAUNCHER_HCCN_TOOL", "LAUNCHER_DCMI_LIB")):
        if value != "-":
            env[var] = value
    binary = linkcheck_binary(root)
    timeout = float(json.loads(spec).get("timeout", 10)) * 4 + 30
    proc = subprocess.run([binary, "--spec", "-", "--json"], input=spec, capture_output=True, env=env,
                          timeout=timeout)
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        report = None
    return {"exit": proc.returncode, "report": report,
            "stderr": proc.stderr.decode("utf-8", "replace").strip()[-2000:]}


def act_tcpcheck(root: str, args: list[str]) -> dict:
    """Can this host open TCP to each ADDR:PORT? refused = reachable (nothing listens yet)."""
    out = {}
    for target in args:
        addr, _, port = target.rpartition(":")
        try:
            with socket.create_connection((addr, int(port)), timeout=3):
                out[target] = "open"
        except ConnectionRefusedError:
            out[target] = "reachable"
        except OSError as exc:
            out[target] = f"unreachable ({exc.strerror or type(exc).__name__})"
    return {"tcp": out}


def _probe_once(root: str, spec: dict) -> str | None:
    """None when the probe passes, else what it saw."""
    import urllib.request
    kind, target = spec["kind"], spec["target"]
    try:
        if kind == "http":
            with urllib.request.urlopen(target, timeout=spec.get("timeout", 5)) as resp:
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        if kind == "tcp":
            addr, _, port = target.rpartition(":")
            with socket.create_connection((addr, int(port)), timeout=spec.get("timeout", 5)):
                return None
        if kind == "command":
            proc = subprocess.run(target, capture_output=True, timeout=spec.get("timeout", 5))
            said = " / ".join(ln.strip() for ln in (proc.stderr or proc.stdout).decode("utf-8", "replace")
                              .strip().splitlines() if ln.strip())
            return None if proc.returncode == 0 else f"exit {proc.returncode}: {said[-300:] or '-'}"
        if kind == "log":
            import re
            pattern = re.compile(target)
            for program in spec.get("programs", []):
                if any(pattern.search(line) for line in tail(os.path.join(root, "logs", f"{program}.log"), 200)):
                    return None
            return f"no log line matches {target!r} yet"
    except Exception as exc:  # a probe that cannot connect is simply not ready
        return f"{type(exc).__name__}: {exc}"
    return f"unknown probe {kind}"


def act_probe(root: str, args: list[str]) -> dict:
    """Wait up to TIMEOUT s (args[0]) until every probe (stdin: JSON list) passes; report each."""
    deadline = time.time() + float(args[0])
    specs = json.loads(_stdin() or b"[]")
    last: dict[int, str | None] = {}
    while True:
        last = {i: _probe_once(root, spec) for i, spec in enumerate(specs)}
        if all(v is None for v in last.values()) or time.time() >= deadline:
            break
        time.sleep(min(spec.get("period", 1.0) for spec in specs) if specs else 0.5)
    return {"ready": all(v is None for v in last.values()),
            "probes": [{"probe": f"{s['kind']} {' '.join(s['target']) if s['kind'] == 'command' else s['target']}",
                        "error": last[i]} for i, s in enumerate(specs)]}


ACTIONS = {"state": act_state, "prepare": act_prepare, "switch": act_switch, "start": act_start,
           "stop": act_stop, "prune": act_prune, "wait": act_wait, "down": act_down, "logs": act_logs,
           "secret": act_secret,
           "linkcheck": act_linkcheck, "tcpcheck": act_tcpcheck, "probe": act_probe}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ACTIONS:
        print(json.dumps({"error": f"usage: hostside {{{','.join(ACTIONS)}}} ROOT ..."}))
        return 2
    action, root = argv[0], argv[1]
    if action != "state":
        _lazy()
    try:
        result = ACTIONS[action](root, argv[2:])
    except Exception as exc:  # the operator side turns this into "host X: ..."
        print(json.dumps({"error": f"{action}: {type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
