"""XML-RPC to this host's supervisord over its unix socket, without xmlrpc.client (cheap to import)."""
from __future__ import annotations

import os
import socket
import time
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Any

# A stop returns once supervisord has the group down: up to stopwaitsecs (30 s, render.py) and
# then the SIGKILL; the call must outlast that, or a slow rank turns into a failed stop
STOP_RPC_TIMEOUT = 75.0


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


def socket_path(root: str) -> str:
    return os.path.join(root, "run", "supervisor.sock")


def rpc(root: str, timeout: float = 30.0) -> Any:
    return Supervisor(socket_path(root), timeout)


def supervisord_alive(root: str) -> bool:
    try:
        return rpc(root, 5.0).supervisor.getState()["statename"] == "RUNNING"
    except (OSError, RpcError):
        return False


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
                    "exitstatus": p["exitstatus"], "spawnerr": p["spawnerr"] or None, "start": p["start"],
                    "starttime": _start_ticks(p["pid"]) if p["pid"] else None})
    return out


def _start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks after boot, proc(5) field 22): with the pid, who it is.
    `status` reads the snapshot's pids again and trusts them only while this still matches."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
