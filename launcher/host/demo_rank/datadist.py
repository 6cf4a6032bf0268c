"""A demo rank's LLM-DataDist act (seeds 000, 001): a prompt rank listens, a decoder rank links to it.

The prompt side listens on its listen ip:port (llm.listenIpInfo); the decoder side, for each
link, connects to every prompt listener of the link (LinkLlmClusters: P listens, D initiates).
Wire format, one UTF-8 JSON object per line:
  decoder -> prompt  {"comm_name": "pd_comm_1_3", "cluster_id": 3, "remote_cluster_id": 1}
  prompt -> decoder  {"ok": true, "cluster_id": 1}  or  {"ok": false, "error": "..."}
A connection that sends nothing (a TCP readiness probe) is closed without a word.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import EnvError, LinkError
from .identity import uint
from .net import IN_USE_RETRY_S, Log, json_line, read_line, retry_in_use
from .signals import start_helper

LINK_RETRY_PAUSE_S = 0.5


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One link (communication domain) as this cluster's LAUNCHER_DATADIST_FILE gives it."""

    comm_name: str
    clusters: tuple[int, ...]             # cluster_rank_info's cluster ids
    prompts: tuple[tuple[int, str], ...]  # (prompt cluster id, its listen ip:port)


@dataclass(frozen=True, slots=True)
class DataDist:
    """This rank's LLM-DataDist cluster: id, role, where it listens (prompt) and its links."""

    cluster_id: int
    role: str                 # prompt | decoder
    listen: str | None        # prompt: ip:port
    links: tuple[LinkSpec, ...]


def _hostport(text: Any, what: str) -> tuple[str, int]:
    """'ip:port' -> (ip, port); raise EnvError naming `what`."""
    host, _, port = text.rpartition(":") if isinstance(text, str) else ("", "", "")
    number = uint(port)
    if not host or number is None or not 1 <= number <= 65535:
        raise EnvError(f"{what}: expected 'ip:port', found {text!r}")
    return host, number


def parse_datadist(doc: Any, path: str, cluster_env: str | None) -> DataDist:
    """Check a LAUNCHER_DATADIST_FILE document (see expand.py) and return what it says."""
    where = f"LAUNCHER_DATADIST_FILE={path}"
    if not isinstance(doc, dict):
        raise EnvError(f"{where}: expected a JSON object")
    cid = uint(str(doc.get("cluster_id", "")))
    role = doc.get("role")
    if cid is None:
        raise EnvError(f"{where}: cluster_id {doc.get('cluster_id')!r} is not an integer")
    if cluster_env is not None and cluster_env != str(cid):
        raise EnvError(f"{where}: cluster_id {cid} but LAUNCHER_DATADIST_CLUSTER_ID={cluster_env!r}")
    if role not in ("prompt", "decoder"):
        raise EnvError(f"{where}: role {role!r} is neither 'prompt' nor 'decoder'")
    options = doc.get("options")
    if not isinstance(options, dict):
        options = {}
    listen = options.get("llm.listenIpInfo")
    if role == "prompt":
        _hostport(listen, f"{where}: options.llm.listenIpInfo")
    links = []
    for k, link in enumerate(doc.get("links") or []):
        lw = f"{where}: links[{k}]"
        if not isinstance(link, dict) or not isinstance(link.get("comm_name"), str):
            raise EnvError(f"{lw}: needs a comm_name")
        info = link.get("cluster_rank_info")
        ids = tuple(uint(str(c)) for c in info) if isinstance(info, dict) else ()
        if not ids or None in ids or cid not in ids:
            raise EnvError(f"{lw}: cluster_rank_info {info!r} does not name this cluster ({cid})")
        listen_map = link.get("prompt_listen")
        if not isinstance(listen_map, dict):
            raise EnvError(f"{lw}: prompt_listen is missing (where the decoder side links to)")
        prompts = []
        for pid, addr in listen_map.items():
            _hostport(addr, f"{lw}: prompt_listen[{pid}]")
            pnum = uint(str(pid))
            if pnum is None or pnum not in ids:
                raise EnvError(f"{lw}: prompt_listen names cluster {pid!r}, not in cluster_rank_info")
            prompts.append((pnum, addr))
        links.append(LinkSpec(link["comm_name"], tuple(c for c in ids if c is not None), tuple(prompts)))
    return DataDist(cid, role, listen if role == "prompt" else None, tuple(links))


def load_datadist(env: Mapping[str, str]) -> DataDist | None:
    """The cluster this rank is, from LAUNCHER_DATADIST_FILE; None when the rank is none."""
    path = env.get("LAUNCHER_DATADIST_FILE", "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except OSError as exc:
        raise EnvError(f"LAUNCHER_DATADIST_FILE={path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EnvError(f"LAUNCHER_DATADIST_FILE={path}: not valid JSON ({exc})") from None
    return parse_datadist(doc, path, env.get("LAUNCHER_DATADIST_CLUSTER_ID"))


def check_link_hello(msg: Any, dd: DataDist) -> str:
    """The prompt side's check of a decoder's hello: what to log about the link, or raise LinkError."""
    if not isinstance(msg, dict):
        raise LinkError(f"not a link hello: {msg!r:.80}")
    comm, peer, remote = msg.get("comm_name"), msg.get("cluster_id"), msg.get("remote_cluster_id")
    if remote != dd.cluster_id:
        raise LinkError(f"hello for cluster {remote!r}, this is cluster {dd.cluster_id}")
    link = next((lk for lk in dd.links if lk.comm_name == comm), None)
    if link is None:
        raise LinkError(f"cluster {dd.cluster_id} is in no link named {comm!r}")
    if type(peer) is not int or peer not in link.clusters or peer == dd.cluster_id:
        raise LinkError(f"cluster {peer!r} is not a member of link {comm} (members {list(link.clusters)})")
    return f"{comm} from cluster {peer}"


def _stamp() -> str:
    """Wall-clock time for ordering log lines across hosts (the e2e testbed shares one clock)."""
    return f"t={time.time():.6f}"


def serve_links(dd: DataDist, log: Log) -> socket.socket:
    """Prompt side: listen on the listen ip:port and answer link hellos on a background thread."""
    assert dd.listen is not None
    host, port = _hostport(dd.listen, "llm.listenIpInfo")
    try:
        listener = retry_in_use(f"datadist listen {dd.listen}", lambda: socket.create_server(
            (host, port), backlog=64), time.monotonic() + IN_USE_RETRY_S, log)
    except OSError as exc:
        raise LinkError(f"cluster {dd.cluster_id} cannot listen on {dd.listen} (llm.listenIpInfo): "
                        f"{exc.strerror or exc}; is the listen IP a device IP of this host?") from None

    def answer(sock: socket.socket, addr: str) -> None:
        with sock:
            line = read_line(sock, time.monotonic() + 5.0)
            if line is None:
                return  # a readiness probe, or a decoder that gave up
            try:
                what = check_link_hello(json.loads(line), dd)
                reply: dict[str, Any] = {"ok": True, "cluster_id": dd.cluster_id}
                log(f"datadist: accepted link {what} at {addr} ({_stamp()})")
            except (ValueError, LinkError) as exc:
                reply = {"ok": False, "error": str(exc)}
                log(f"datadist: refused a link from {addr}: {exc}")
            try:
                sock.sendall(json_line(reply))
            except OSError:
                pass

    def accept_forever() -> None:
        while True:
            try:
                sock, peer = listener.accept()
            except OSError:
                return  # closed at exit
            threading.Thread(target=answer, args=(sock, f"{peer[0]}:{peer[1]}"), daemon=True).start()

    start_helper(threading.Thread(target=accept_forever, name="datadist", daemon=True))
    log(f"datadist: listening on {dd.listen} (cluster {dd.cluster_id}, {_stamp()})")
    return listener


def link_once(dd: DataDist, comm: str, remote: int, addr: str, local_ip: str | None,
              timeout: float) -> None:
    """One link attempt from the decoder side; raise OSError (cannot connect) or LinkError."""
    host, port = _hostport(addr, f"link {comm}")
    source = (local_ip, 0) if local_ip else None  # LinkLlmClusters' local_ip_infos: our device IP
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout, source_address=source) as sock:
        sock.sendall(json_line({"comm_name": comm, "cluster_id": dd.cluster_id, "remote_cluster_id": remote}))
        reply = read_line(sock, deadline)
    if reply is None:
        raise LinkError(f"{addr} accepted the connection but sent no link reply within {timeout:g} s")
    try:
        msg = json.loads(reply)
    except ValueError:
        msg = None
    if not isinstance(msg, dict) or msg.get("ok") is not True or msg.get("cluster_id") != remote:
        why = msg.get("error") if isinstance(msg, dict) else f"{reply[:80]!r}"
        raise LinkError(f"cluster {remote} at {addr} refused link {comm}: {why}")


def link_all(dd: DataDist, local_ip: str | None, retries: int, timeout: float, log: Log) -> list[dict[str, Any]]:
    """Decoder side: link to every prompt listener of every link; raise LinkError at the first
    that fails after `retries` more attempts (0: one attempt, so only start order can make it work)."""
    done = []
    for link in dd.links:
        for remote, addr in link.prompts:
            for attempt in range(retries + 1):
                try:
                    link_once(dd, link.comm_name, remote, addr, local_ip, timeout)
                    break
                except OSError as exc:
                    why = exc.strerror or str(exc) or type(exc).__name__
                    if attempt == retries:
                        raise LinkError(f"link {link.comm_name}: cannot reach prompt cluster {remote} at {addr} "
                                        f"after {retries + 1} attempt(s): {why} (is the prompt side listening? "
                                        "it must start first)") from None
                    log(f"datadist: link {link.comm_name} to {addr}: {why}; retry {attempt + 1}/{retries}")
                    time.sleep(LINK_RETRY_PAUSE_S)
            log(f"datadist: linked {link.comm_name} to {addr} (cluster {dd.cluster_id} -> {remote}, {_stamp()})")
            done.append({"comm_name": link.comm_name, "remote_cluster_id": remote, "peer": addr})
    return done
