"""Operator-side calls to the host side (launcher.host.hostside) through a Transport: one JSON reply each.

Every call is ``python3 -I -S -c BOOTSTRAP ROOT RUNTIME-ID ACTION ARGS...``: the host may have
nothing of ours yet, so the bootstrap (standard library only) reads the upload's tar itself
when there is one (``prepare``, ``install-runtime``: the runtime's part gzipped, installed
under runtime/<id> by a rename), reports a host without this runtime, and otherwise imports
launcher.host.hostside from the runtime's site.zip and dispatches the action. A host deployed
by another launcher version still answers ``state`` with the runtime it runs; any other action
there ships this runtime first (HostClient.call). Replies are one JSON object; errors name the
host. ``HostClient.state`` first tries a shell fast path (no Python started on the host): a
blank host, or the agent's snapshot while the agent lives; the reply is parsed once, into a
records.HostState.
"""
from __future__ import annotations

import json
from typing import Any

from ..host.state import BLANK_MARKS
from .fencing import Fence
from .records import ALIVE, HostState
from .runtime import Runtime
from .transport import COMMAND_TIMEOUT, Transport, TransportError

BOOTSTRAP = r"""
import json, os, sys
root, rid, action = sys.argv[1:4]
base = os.path.join(root, 'runtime', rid)
TAG = b'ascend-launcher pyc-magic='  # runtime.MAGIC_TAG
MAGIC = sys.modules['_frozen_importlib_external'].MAGIC_NUMBER  # this Python's bytecode
data = None
if sys.argv[4:5] and sys.argv[4].startswith('--fence='):
    # a command's fencing token (deploy/fencing.py): refused when lower than the highest this
    # host has seen, before anything is touched; held (shared) until this call ends, so a newer
    # token's first call here waits for the older command's call in flight. stdin is read
    # first: a stalled operator must not hold the fence while we wait for its upload
    import fcntl, io
    fence = int(sys.argv.pop(4)[8:])
    data = sys.stdin.buffer.read()
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    os.makedirs(os.path.join(root, 'state'), exist_ok=True)
    ffd = os.open(os.path.join(root, 'state', 'fence'), os.O_RDWR | os.O_CREAT, 0o644)
    mark = lambda: int(os.pread(ffd, 32, 0).strip() or b'0')
    fcntl.flock(ffd, fcntl.LOCK_SH)
    if mark() < fence:
        fcntl.flock(ffd, fcntl.LOCK_EX)
        if mark() < fence:
            os.pwrite(ffd, b'%020d\n' % fence, 0)
            os.fsync(ffd)
        fcntl.flock(ffd, fcntl.LOCK_SH)
    if mark() != fence:
        print(json.dumps({'error': 'refused fencing token %d: this host has seen %d (the deployment lock '
                          'was taken over by a newer command)' % (fence, mark()), 'fenced': mark()}))
        sys.exit(1)
    if action == 'fence':
        print(json.dumps({'fence': fence}))
        sys.exit(0)
def untar(data):
    # Our own ustar of regular files, read without tarfile (importing it costs more than this).
    out, i = [], 0
    while i + 512 <= len(data) and data[i]:
        h = data[i:i + 512]
        name = h[:100].split(b'\0', 1)[0]
        pre = h[345:500].split(b'\0', 1)[0]
        name = (pre + b'/' + name if pre else name).decode()
        size = int(h[124:136].strip(b'\0 ') or b'0', 8)
        body = data[i + 512:i + 512 + size]
        if (sum(h[:148]) + 256 + sum(h[156:]) != int(h[148:156].strip(b'\0 ') or b'0', 8)
                or h[156:157] not in (b'0', b'\0') or len(body) != size
                or name.startswith('/') or '..' in name.split('/')):
            sys.exit('refusing archive member ' + name)
        out.append((name, int(h[100:108].strip(b'\0 ') or b'0', 8), body))
        i += 512 + (size + 511) // 512 * 512
    return out
def repyc(body):
    # site.zip's pycs are the operator's bytecode; this Python has another magic: compile them
    # once here, or every process started from the zip would compile its modules at each start
    import io, marshal, zipfile, importlib.util as u
    src, out = zipfile.ZipFile(io.BytesIO(body)), io.BytesIO()
    with zipfile.ZipFile(out, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('.pyc'):
                source = src.read(info.filename[:-1])
                try:
                    code = compile(source, info.filename[:-1], 'exec', dont_inherit=True)
                except SyntaxError:
                    continue
                data = u.MAGIC_NUMBER + b'\1\0\0\0' + u.source_hash(source) + marshal.dumps(code)
            dst.writestr(info, data)
        dst.comment = TAG + u.MAGIC_NUMBER.hex().encode()
    return out.getvalue()
def install(files, prefix):
    # into a temp dir beside the runtime, synced, then renamed: a half-written runtime is never
    # used, nor one a power loss truncated; a concurrent install of the same runtime may win
    files = [(n[len(prefix):], m, b) for n, m, b in files if n.startswith(prefix)]
    if not files or os.path.isdir(base):
        return
    tmp = '%s.tmp-%d' % (base, os.getpid())
    made = {tmp}
    os.makedirs(tmp, exist_ok=True)
    for name, mode, body in files:
        if name == 'site.zip' and not body.endswith(TAG + MAGIC.hex().encode()):
            body = repyc(body)
        path = os.path.join(tmp, name)
        d = os.path.dirname(path)
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o777)
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
    for d in sorted(made, key=len, reverse=True) + [os.path.dirname(base)]:
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    try:
        os.rename(tmp, base)
    except OSError:
        if not os.path.isdir(base):
            raise
        import shutil  # another call installed this runtime meanwhile: it is the same one
        shutil.rmtree(tmp, ignore_errors=True)
        return
    fd = os.open(os.path.dirname(base), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
files = None
if action in ('prepare', 'install-runtime'):
    # prepare: one upload of runtime/ (only when this host lacks it), gen/, maybe the agent key;
    # the runtime part comes as one gzip member (runtime.Runtime.packed), the rest as it is
    data = sys.stdin.buffer.read() if data is None else data
    if data[:2] == b'\x1f\x8b':
        import zlib
        z = zlib.decompressobj(31)
        data = z.decompress(data) + z.unused_data
    files = untar(data)
    install(files, 'runtime/')
if action == 'install-runtime':
    print(json.dumps({'runtime': rid}))
    sys.exit(0)
site = os.path.join(base, 'site.zip')
extra = []
if not os.path.isfile(site):
    # A new launcher version: `state` still reads what runs, with the runtime in place (its
    # site.zip, or the site/ tree of an older launcher).
    cur = os.path.join(root, 'runtime', 'current')
    site = next((p for p in (os.path.join(cur, 'site.zip'), os.path.join(cur, 'site'))
                 if os.path.isfile(p) or os.path.isdir(os.path.join(p, 'launcher'))), None)
    if action != 'state' or site is None:
        print(json.dumps({'runtime_missing': True, 'root': root, 'deployed': os.path.isdir(cur)}))
        sys.exit(0)
    extra = ['--runtime-missing']
sys.path.insert(0, site)
if extra:
    try:
        from launcher.host import hostside
    except ImportError:  # launcher 0.1's runtime: the host side was launcher/hostside.py
        from launcher import hostside
else:
    from launcher.host import hostside
hostside.UPLOAD = files
sys.exit(hostside.main([action, root] + sys.argv[4:] + extra))
""".strip()


class HostClient:
    """The deployment's root on one host, reached through one transport."""

    def __init__(self, transport: Transport, root: str, runtime: Runtime):
        self.transport = transport
        self.root = root
        self.runtime = runtime
        self.fence: Fence | None = None  # set while the command holds the deployment lock (lock.py)

    @property
    def name(self) -> str:
        return self.transport.host.name

    def call(self, action: str, *args: str, stdin: bytes | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        # -I -S: no user site, no site-packages, no PYTHON* env: faster start, nothing of the host's leaks in
        fence = self.fence
        if fence is not None:  # a command holding the deployment lock: every call carries its token
            fence.check()
        fenced = (f"--fence={fence.token}",) if fence is not None else ()
        argv = ["python3", "-I", "-S", "-c", BOOTSTRAP, self.root, self.runtime.id, action, *fenced, *args]
        res = self.transport.run(argv, stdin=stdin, timeout=timeout)
        text = res.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            reply = json.loads(text[-1]) if text else None
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            err = res.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = err[-1] if err else f"exit code {res.exit_code}, no reply"
            if res.exit_code == 127 or "python3: not found" in detail or "No such file" in detail and "python3" in detail:
                detail = "python3 is not installed on this host (the launcher needs only python3 there)"
            raise TransportError(self.name, f"{action}: {detail}")
        if "fenced" in reply and fence is not None:
            fence.lose(f"host {self.name} refused its token: it has seen token {reply['fenced']}")
            fence.check()
        if "error" in reply:
            raise TransportError(self.name, reply["error"], reply.get("traceback"))
        if reply.get("runtime_missing") and reply.get("deployed") and action not in ("state", "install-runtime"):
            # deployed by another launcher version: ship ours, then act on what runs (down after
            # an upgrade must stop it, not report success for a host it never touched)
            self.call("install-runtime", stdin=self.runtime.tar)
            return self.call(action, *args, stdin=stdin, timeout=timeout)
        return reply

    # The fast paths, no Python started: a host with nothing of the deployment on it (no generation,
    # no supervisord, no key, no gang records) is blank; while the host's agent lives, its
    # snapshot is the state (one `cat`).
    FAST_STATE = ('r=$1; test -f "$r/runtime/$2/site.zip" || echo runtime-missing; blank=1; '
                  f'for f in {" ".join(BLANK_MARKS)}; do if test -e "$r/$f" || test -L "$r/$f"; then blank=; fi; done; '
                  'if test "$blank"; then echo \'{"blank": true}\'; exit 0; fi; '
                  'p=$(cat "$r/state/agent.pid" 2>/dev/null) && s=$(cat "$r/state/snapshot.json" 2>/dev/null) || exit 1; '
                  # and, in the same round trip, what /proc says now of the agent and of every pid
                  # the snapshot names: a dead or reused pid must not be reported as running
                  'printf "%s\n#proc\n" "$s"; read u _ </proc/uptime; echo "uptime $u"; '
                  'echo "hz $(getconf CLK_TCK 2>/dev/null || echo 100)"; '
                  'for q in "$p" $(printf "%s" "$s" | grep -o \'"pid": [0-9]*\'); do '
                  'case $q in ""|*[!0-9]*) continue;; esac; l=; read -r l 2>/dev/null <"/proc/$q/stat"; '
                  'echo "$q $l"; done')  # read, a builtin: no process per pid

    def state(self, timeout: float = COMMAND_TIMEOUT) -> HostState:
        """The deployment's state on this host: the fast path's answer, else hostside's `state`."""
        return HostState.from_json(self._state(timeout))

    def _state(self, timeout: float) -> dict[str, Any]:
        res = self.transport.run(["sh", "-c", self.FAST_STATE, "sh", self.root, self.runtime.id], timeout=timeout)
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        missing = bool(lines) and lines[0] == "runtime-missing"
        body = "\n".join(lines[1:] if missing else lines).strip()
        body, _, proc = body.partition("\n#proc\n")
        if res.exit_code == 0 and body:
            try:
                snap = json.loads(body)
            except ValueError:
                snap = None
            if isinstance(snap, dict) and not snap.get("blank"):
                snap = verified_snapshot(snap, proc)  # None: the snapshot no longer says what runs
            if isinstance(snap, dict) and snap.get("blank"):
                return blank_state(self.root, missing)
            if isinstance(snap, dict):
                snap["runtime_missing"] = missing
                return snap
        return self.call("state", timeout=timeout)

    def ensure_runtime(self, state: HostState) -> bool:
        """Install this launcher's runtime where ``state`` says it is missing; whether it was."""
        if not state.runtime_missing:
            return False
        self.call("install-runtime", stdin=self.runtime.tar)
        return True


def blank_state(root: str, runtime_missing: bool) -> dict[str, Any]:
    """The state of a host with nothing of the deployment (state.BLANK_MARKS), as `state` answers it."""
    return {"root": root, "secret_id": None, "generation": None, "supervisord": False, "manifest": None,
            "programs": [], "gang": {}, "started": {}, "waiting": {}, "blank": True, "runtime_missing": runtime_missing}


def verified_snapshot(snap: dict[str, Any], proc: str) -> dict[str, Any] | None:
    """The agent's snapshot as it is now, checked against /proc (``proc``: ``uptime S``, ``hz N``,
    then ``PID STAT-LINE`` for the agent and each pid the snapshot names, the line empty when
    gone): None when the agent is dead or a zombie, or a program the snapshot has running is
    gone, a zombie or another process (start time), or a running program in a container has no
    container in it; else the snapshot with each running program's uptime from its start time
    (the snapshot's is as old as the snapshot)."""
    lines = proc.splitlines()
    head = dict(ln.split(" ", 1) for ln in lines[:2] if " " in ln)
    try:
        host_uptime, hz = float(head["uptime"]), int(head["hz"])
    except (KeyError, ValueError):
        return None
    stats: dict[int, tuple[str, int] | None] = {}
    for ln in lines[2:]:
        pid, _, stat = ln.partition(" ")
        fields = stat.rsplit(")", 1)[-1].split() if ")" in stat else []
        try:
            stats[int(pid)] = (fields[0], int(fields[19])) if len(fields) > 19 else None
        except ValueError:
            continue
    agent = stats.get(next(iter(stats), -1))
    if agent is None or agent[0] in ("Z", "X"):
        return None
    boxed = {p["name"] for p in (snap.get("manifest") or {}).get("programs", []) if p.get("container")}
    programs = []
    for p in snap.get("programs") or []:
        if p.get("state") in ALIVE and p.get("name") in boxed and not p.get("container"):
            return None  # written as the runner started, before its container was there: ask the engine
        if p.get("pid") and p.get("state") in ALIVE:
            st = stats.get(p["pid"])
            if st is None or st[0] in ("Z", "X") or p.get("starttime") not in (None, st[1]):
                return None
            p = {**p, "uptime": round(max(0.0, host_uptime - st[1] / hz), 1)}
        programs.append(p)
    return {**snap, "programs": programs}
