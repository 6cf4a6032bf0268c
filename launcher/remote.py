"""Operator-side calls to the host-side code (launcher.hostside) through a Transport.

The first call to a fresh host cannot import anything of ours, so every call goes through a
small bootstrap passed with ``python3 -c``: it installs the runtime when asked (a tar on
stdin), reports a host without one, and otherwise imports launcher.hostside from the
deployment's runtime and dispatches. Replies are one JSON object; errors name the host.
"""
from __future__ import annotations

import json
from typing import Any

from .runtime import Runtime
from .transport import COMMAND_TIMEOUT, Transport, TransportError

BOOTSTRAP = r"""
import io, json, os, sys, tarfile
root, rid, action = sys.argv[1:4]
base = os.path.join(root, 'runtime', rid)
data = None
if action == 'prepare':
    # one upload: runtime/ (only when this host lacks it), gen/, maybe the agent key
    data = sys.stdin.buffer.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode='r:') as tar:
        rt = [m for m in tar.getmembers() if m.name.startswith('runtime/') and m.isfile()]
        if rt and not os.path.isdir(base):
            os.makedirs(os.path.dirname(base), exist_ok=True)
            tmp = '%s.tmp-%d' % (base, os.getpid())
            for m in rt:
                m.name = m.name[len('runtime/'):]
                if m.name.startswith('/') or '..' in m.name.split('/'):
                    sys.exit('refusing archive member ' + m.name)
            tar.extractall(tmp, members=rt)
            os.rename(tmp, base)
if action == 'install-runtime':
    if not os.path.isdir(base):
        os.makedirs(os.path.dirname(base), exist_ok=True)
        tmp = '%s.tmp-%d' % (base, os.getpid())
        os.makedirs(tmp)
        with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode='r:') as tar:
            tar.extractall(tmp)
        os.rename(tmp, base)
    print(json.dumps({'runtime': rid}))
    sys.exit(0)
site = os.path.join(base, 'site')
extra = []
if not os.path.isdir(os.path.join(site, 'launcher')):
    # A new launcher version: `state` still reads what runs, with the runtime in place.
    site = os.path.join(root, 'runtime', 'current', 'site')
    if action != 'state' or not os.path.isdir(os.path.join(site, 'launcher')):
        print(json.dumps({'runtime_missing': True, 'root': root}))
        sys.exit(0)
    extra = ['--runtime-missing']
sys.path.insert(0, site)
from launcher import hostside
hostside.STDIN = data
sys.exit(hostside.main([action, root] + sys.argv[4:] + extra))
""".strip()


class HostClient:
    """The deployment's root on one host, reached through one transport."""

    def __init__(self, transport: Transport, root: str, runtime: Runtime):
        self.transport = transport
        self.root = root
        self.runtime = runtime

    @property
    def name(self) -> str:
        return self.transport.host.name

    def call(self, action: str, *args: str, stdin: bytes | None = None,
             timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        # -I -S: no user site, no site-packages, no PYTHON* env: faster start, nothing of the host's leaks in
        argv = ["python3", "-I", "-S", "-c", BOOTSTRAP, self.root, self.runtime.id, action, *args]
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
        if "error" in reply:
            raise TransportError(self.name, reply["error"])
        return reply

    # The fast path: while the host's agent lives, its snapshot is the state (one `cat`, no Python).
    FAST_STATE = ('r=$1; test -d "$r/runtime/$2/site/launcher" || echo runtime-missing; '
                  'p=$(cat "$r/state/agent.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null && '
                  'cat "$r/state/snapshot.json" 2>/dev/null')

    def state(self, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        res = self.transport.run(["sh", "-c", self.FAST_STATE, "sh", self.root, self.runtime.id], timeout=timeout)
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        missing = bool(lines) and lines[0] == "runtime-missing"
        body = "\n".join(lines[1:] if missing else lines).strip()
        if res.exit_code == 0 and body:
            try:
                snap = json.loads(body)
                snap["runtime_missing"] = missing
                return snap
            except ValueError:
                pass
        return self.call("state", timeout=timeout)

    def ensure_runtime(self, state: dict[str, Any]) -> bool:
        if not state.get("runtime_missing"):
            return False
        self.call("install-runtime", stdin=self.runtime.tar)
        return True
