"""The ranktable rendezvous of a LeaderWorkerSet group: the init container of each of its pods.

A pod's placement is known only once it is scheduled, so its group's HCCL ranktable cannot be
rendered ahead. Every pod reads its NPUs' facts (npu_facts.py: device IPs; on Atlas A3 vnic IPs,
SDIDs and Super Pod IDs, as `launcher discover` reads them), the workers report them to the leader
(LWS_LEADER_ADDRESS, LWS_WORKER_INDEX 0), which builds the group's table with the core's own
ranktable code (launcher/core/ranktable.py, ranktable_v12.py and jsonfmt.py ship in the runtime for
this: the bytes are what `launcher render` writes for the same servers and devices, v1.0 or v1.2) and sends it back; each pod
writes it where RANK_TABLE_FILE points, and the group's addresses for its launch script, before
its serving container starts.

Messages are the agents' (messages.py): one signed JSON line each, HMAC under the key in
LAUNCHER_RENDEZVOUS_KEY, stamped and with a nonce. A worker keeps its connection open until the
table comes: a worker whose connection drops before (its pod killed) fails the group at once, one
that never reports fails it at the deadline, each message naming the pod; the leader tells every
worker still connected, and every pod's init container exits 1, so LWS recreates the group (its
RecreateGroupOnPodRestart), and the new group forms its table anew.
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from typing import Any, NoReturn

from ..core import jsonfmt
from ..core.ranktable import RankSlot, hccl_v1, pd_local
from ..core.ranktable_v12 import hccl_v12, host_ip, pd_local_v12
from .messages import Refused, Verifier, sign
from .npu_facts import HCCN_TOOLS, NPU_SMIS, Unreadable, find_tool, read_devices

TABLE_MODE = 0o640  # as the SSH path writes ranktables (MindIE and ATB refuse more)
POLL = 0.5  # seconds between connection attempts to a leader not yet listening
LEADER = "leader"  # a message's recipient: the leader, or worker-<index> (one group's key signs both ways)


def worker(index: int | None) -> str:
    return f"worker-{index}"


class Failed(Exception):
    """The group cannot form its table; str() names the pod and why."""


def table_bytes(fmt: str, members: list[dict[str, Any]]) -> bytes:
    """The group's ranktable: servers in LWS_WORKER_INDEX order, each its devices ascending, ranks
    counted on across servers (the plan's numbering); the server id is the pod's address. Devices
    are [id, ip] (A2: v1.0) or [id, vnic ip, sdid, super pod id, NIC ip or None] (Atlas A3: v1.2,
    as `render` writes for SuperPoD hosts: a group across SuperPoDs carries the NIC IPs, core/a3_ips.py)."""
    slots: list[RankSlot] = []
    across = len({str(dev[3]) for m in members for dev in m["devices"] if len(dev) >= 4}) > 1
    for m in members:
        for dev in sorted(m["devices"], key=lambda d: d[0]):
            if len(dev) >= 4:
                ip = dev[1]
                if across:
                    ip = dev[4] if len(dev) > 4 else None
                    if not ip:
                        raise Failed(f"{m.get('name') or m['address']} device {dev[0]}: the group spans SuperPoDs, "
                                     "so HCCL goes over RoCE, and this die has no NIC IP (hccn_tool -i "
                                     f"{dev[0]} -ip -g; /etc/hccn.conf address_{dev[0]})")
                slots.append(RankSlot(m["address"], dev[0], ip, len(slots), None, None, dev[2], dev[3],
                                      host_ip(m["address"])))
            else:
                slots.append(RankSlot(m["address"], dev[0], dev[1], len(slots),
                                      m["address"] if fmt == "mindie" else None))
    a3 = bool(slots) and all(s.super_pod_id is not None for s in slots)
    if a3 and fmt == "mindie":  # support.py refuses it at export: v1.2 carries no container_ip
        raise Failed("MindIE's table on SuperPoD servers is not formed here (v1.2 has no container_ip)")
    if a3:
        check_pods_adjacent(members)
        return jsonfmt.dumps_bytes(hccl_v12(slots) if fmt == "hccl" else pd_local_v12(slots))
    if any(s.super_pod_id is not None for s in slots):
        raise Failed("SuperPoD servers and others in one group: one table has one version")
    if fmt == "mindie" and len(members) < 2:
        raise Failed("MindIE's multi-node table needs 2 to 60 servers; this group has 1")
    return jsonfmt.dumps_bytes(pd_local(slots) if fmt == "pd-local" else hccl_v1(slots))


def check_pods_adjacent(members: list[dict[str, Any]]) -> None:
    """HCCL's v1.2 parser wants each Super Pod's servers together in rank order (validate refuses
    an instance listing them apart); here the scheduler placed them, so the group fails saying where."""
    seen: list[str] = []
    for m in members:
        pod = str(m["devices"][0][3])
        if seen and pod != seen[-1] and pod in seen:
            where = ", ".join(f"worker {j}: pod {mm['devices'][0][3]}" for j, mm in enumerate(members))
            raise Failed(f"the scheduler placed the group's servers with Super Pod {pod}'s apart ({where}): "
                         "HCCL needs each pod's servers adjacent in rank order; constrain the placement "
                         "(a node affinity per Super Pod) or use fewer pods")
        if not seen or seen[-1] != pod:
            seen.append(pod)


def write_atomic(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_outputs(args: argparse.Namespace, table: bytes, addresses: list[str]) -> str:
    """The table where RANK_TABLE_FILE points, and pod.env: LAUNCHER_ADDR_<j> for the launch script."""
    path = args.table.replace("{leader}", addresses[0])
    write_atomic(path, table, TABLE_MODE)
    env = "".join(f"LAUNCHER_ADDR_{j}='{a}'\n" for j, a in enumerate(addresses))
    write_atomic(os.path.join(args.dir, "pod.env"), env.encode(), 0o644)
    return path


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


class Pod:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        env = os.environ
        try:
            self.key = env["LAUNCHER_RENDEZVOUS_KEY"].strip().encode()
            self.index, self.size = int(env["LWS_WORKER_INDEX"]), int(env["LWS_GROUP_SIZE"])
            self.leader, self.address = env["LWS_LEADER_ADDRESS"], env["LAUNCHER_POD_IP"]
        except (KeyError, ValueError) as exc:
            raise Failed(f"not in a LeaderWorkerSet pod as exported: {exc} is missing or malformed "
                         "(LWS_WORKER_INDEX, LWS_GROUP_SIZE, LWS_LEADER_ADDRESS, LAUNCHER_POD_IP, "
                         "LAUNCHER_RENDEZVOUS_KEY)") from None
        if not self.key:
            raise Failed("LAUNCHER_RENDEZVOUS_KEY is empty")
        self.name = env.get("LAUNCHER_POD_NAME") or f"worker {self.index}"
        self.clock = Deadline(args.timeout)
        self.verifier = Verifier()
        self.group = f"{self.leader}/{self.size}"  # a report for another group (same key) is refused

    def left(self) -> float:
        return self.clock.left()

    def pod_name(self, index: int) -> str:
        """LWS names pod j of a group `<leader pod>-<j>`; without the leader's name, its index."""
        lead = os.environ.get("LAUNCHER_POD_NAME") if self.index == 0 else None
        return f"pod {lead}-{index} (worker {index})" if lead else f"worker {index}"

    # --- the leader ----------------------------------------------------------------------
    def lead(self, devices: list[list[Any]]) -> tuple[bytes, list[str]]:
        me = {"index": 0, "address": self.address, "devices": devices, "name": self.name}
        reports: dict[int, dict[str, Any]] = {0: me}
        conns: dict[socket.socket, int | None] = {}
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", self.args.port))
        srv.listen(self.size + 8)
        buffers: dict[socket.socket, bytes] = {}
        try:
            while len(reports) < self.size:
                if not self.left():
                    missing = [self.pod_name(j) for j in range(1, self.size) if j not in reports]
                    raise Failed(f"{', '.join(missing)} never reported its devices within {self.args.timeout:g} s")
                ready, _, _ = select.select([srv, *conns], [], [], min(self.left(), 1.0))
                for s in ready:
                    if s is srv:
                        c, _ = srv.accept()
                        conns[c], buffers[c] = None, b""
                        continue
                    self.read_report(s, conns, buffers, reports, len(devices))
            members = [reports[j] for j in range(self.size)]
            if len({len(d) for m in members for d in m["devices"]}) > 1:
                raise Failed("SuperPoD servers and others in one group: one table has one version")
            table = table_bytes(self.args.format, members)
            addresses = [reports[j]["address"] for j in range(self.size)]
            for c in conns:
                c.sendall(sign(self.key, {"kind": "table", "group": self.group, "ok": True,
                                          "table": table.decode("utf-8"), "addresses": addresses},
                               sender=LEADER, to=worker(conns[c]), deployment=self.group))
            return table, addresses
        except Failed as exc:
            for c in conns:
                try:
                    c.sendall(sign(self.key, {"kind": "table", "group": self.group, "ok": False, "error": str(exc)},
                                   sender=LEADER, to=worker(conns[c]), deployment=self.group))
                except OSError:
                    pass
            raise
        finally:
            for c in conns:
                c.close()
            srv.close()

    def read_report(self, s: socket.socket, conns: dict[socket.socket, int | None], buffers: dict[socket.socket, bytes],
                    reports: dict[int, dict[str, Any]], count: int) -> None:
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        index = conns[s]
        if not data:
            del conns[s]
            s.close()
            if index is not None:  # it had reported: its pod went away before the table was formed
                r = reports[index]
                raise Failed(f"{r['name']} (worker {index}, {r['address']}) left the rendezvous before the "
                             "group's table was formed")
            return
        buffers[s] += data
        if b"\n" not in buffers[s] or index is not None:
            return
        try:
            body = self.verifier.verify(self.key, buffers[s].split(b"\n", 1)[0], host=LEADER, deployment=self.group)
        except Refused as exc:
            print(f"rendezvous: refused a report: {exc}", file=sys.stderr, flush=True)
            del conns[s]
            s.close()
            return
        j = body.get("index")
        if body.get("kind") != "report" or body.get("group") != self.group or not isinstance(j, int) \
                or not 0 < j < self.size or j in reports:
            print(f"rendezvous: refused a report for {body.get('group')} worker {j!r}", file=sys.stderr, flush=True)
            del conns[s]
            s.close()
            return
        devices = [list(d) for d in body["devices"]]
        if len(devices) != count:
            raise Failed(f"{body['name']} (worker {j}) has {len(devices)} NPUs, the leader {count}: an HCCL "
                         "world needs the same count on every server")
        conns[s] = j
        reports[j] = {"index": j, "address": str(body["address"]), "devices": devices, "name": str(body["name"])}
        print(f"rendezvous: {body['name']} (worker {j}, {body['address']}) reported {len(devices)} NPUs",
              file=sys.stderr, flush=True)

    # --- a worker ------------------------------------------------------------------------
    def follow(self, devices: list[list[Any]]) -> tuple[bytes, list[str]]:
        s = self.connect()
        with s:
            s.sendall(sign(self.key, {"kind": "report", "group": self.group, "index": self.index,
                                      "address": self.address, "name": self.name, "devices": devices},
                           sender=worker(self.index), to=LEADER, deployment=self.group))
            s.settimeout(self.left() + 5)  # the leader answers by its own deadline
            try:
                line = s.makefile("rb").readline()
            except OSError as exc:
                raise Failed(f"the leader {self.leader} did not answer: {exc}") from None
        if not line:
            raise Failed(f"the leader {self.leader} closed the rendezvous without a table (its pod failed "
                         "or was restarted)")
        try:
            body = self.verifier.verify(self.key, line, host=worker(self.index), deployment=self.group)
        except Refused as exc:
            raise Failed(f"the leader's answer was refused: {exc}") from None
        if body.get("group") != self.group:
            raise Failed(f"the leader answered for another group ({body.get('group')})")
        if not body.get("ok"):
            raise Failed(f"the leader failed the group: {body.get('error')}")
        return str(body["table"]).encode("utf-8"), [str(a) for a in body["addresses"]]

    def connect(self) -> socket.socket:
        last: Exception | None = None
        while self.left():
            try:
                return socket.create_connection((self.leader, self.args.port), timeout=min(5.0, self.left()))
            except OSError as exc:  # not listening yet, or its name not resolvable yet
                last = exc
                time.sleep(min(POLL, self.left()))
        raise Failed(f"the leader {self.leader}:{self.args.port} did not accept the report within "
                     f"{self.args.timeout:g} s: {last}")

    def run(self) -> str:
        wait_for(self.args.wait, self.clock)
        ids = os.environ.get("ASCEND_VISIBLE_DEVICES") or self.args.devices  # the device plugin's choice
        try:
            read = read_devices([int(d) for d in ids.split(",") if d],
                                find_tool(self.args.hccn_tool, HCCN_TOOLS, "hccn_tool"), self.args.superpod,
                                find_tool(self.args.npu_smi, NPU_SMIS, "npu-smi"), self.args.chips_per_card)
        except Unreadable as exc:
            raise Failed(f"{self.name}: {exc}") from None
        devices = [[d.id, d.ip] + ([d.sdid, d.pod, d.nic_ip] if self.args.superpod else []) for d in read]
        table, addresses = self.lead(devices) if self.index == 0 else self.follow(devices)
        return write_outputs(self.args, table, addresses)


def wait_for(targets: list[str], clock: Deadline) -> None:
    """Each tcp://HOST:PORT accepts a connection (what the owner depends on is up), by the deadline."""
    for target in targets:
        host, _, port = target.removeprefix("tcp://").rpartition(":")
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=min(5.0, max(clock.left(), 0.1))).close()
                break
            except OSError as exc:
                if not clock.left():
                    raise Failed(f"{target} (a dependency) did not answer within {clock.seconds:g} s: {exc}") \
                        from None
                time.sleep(min(POLL * 2, clock.left()))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="launcher.host.rendezvous")
    p.add_argument("--port", type=int, default=29390)
    p.add_argument("--dir", default="/run/ascend-launcher")
    p.add_argument("--table", help="where the group's ranktable goes ({leader}: pod 0's address)")
    p.add_argument("--format", choices=("hccl", "mindie", "pd-local"), default="hccl",
                   help="mindie: HCCL v1.0 with each server's container_ip (the pod's address), as MindIE requires")
    p.add_argument("--devices", default="", help="NPU ids, when the device plugin does not say")
    p.add_argument("--hccn-tool", default=None)
    p.add_argument("--superpod", action="store_true", help="Atlas A3: vnic IPs, SDIDs, Super Pod IDs; table v1.2")
    p.add_argument("--npu-smi", default=None)
    p.add_argument("--chips-per-card", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--wait", action="append", default=[], metavar="tcp://HOST:PORT")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> NoReturn:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.table is None:  # a service's init container: only the waits
            wait_for(args.wait, Deadline(args.timeout))
            sys.exit(0)
        path = Pod(args).run()
    except Failed as exc:
        print(f"rendezvous failed: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"rendezvous: wrote {path}", file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
