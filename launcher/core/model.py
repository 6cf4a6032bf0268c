"""The typed, frozen input model: what a topology file declares, defaults applied.

Everything here is immutable (tuples, frozen dataclasses) so expansion can be a pure
function; only the parsed document kept for positions (Topology.locs) is not, and it is
no part of equality or hashing. Env is kept as a tuple of (name, value) pairs in file order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping

from .yamlsrc import Source

Env = tuple[tuple[str, str], ...]

DEFAULT_DEPLOY_DIR = "/var/lib/ascend-launcher"
DEFAULT_RENDEZVOUS_PORT = 29500
DEFAULT_SSH_PORT = 22
DISCOVER = "discover"


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    ip: str | None  # None: left to discovery and not yet in the lock file
    discover: bool = False  # the topology says `discover`: the IP comes from the lock file
    sdid: int | None = None  # Atlas A3 super_device_id; None: not given, or left to discovery and not found
    sdid_discover: bool = False  # the SDID comes from the lock file
    # Atlas A3: the die's RoCE NIC IP (hccn_tool -i N -ip -g; /etc/hccn.conf address_N) where `ip` is its
    # vnic's; what HCCL's tables carry when the world goes over RoCE (a3_ips.py). None: not given
    nic_ip: str | None = None
    nic_ip_discover: bool = False  # the topology says `nic_ip: discover`


@dataclass(frozen=True, slots=True)
class Ssh:
    user: str | None = None
    port: int = DEFAULT_SSH_PORT
    identity_file: str | None = None


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: str
    server_id: str
    container_ip: str | None
    transport: str  # "ssh" | "local"
    ssh: Ssh
    deploy_dir: str
    devices: tuple[Device, ...]
    hccn_tool: str | None = None  # None: the checker looks in the driver's path, then PATH
    dcmi_lib: str | None = None   # None: the checker tries the driver's usual libdcmi.so paths
    super_pod_id: str | None = None  # Atlas A3 SuperPoD id; None: not given (an A2 host) or not discovered yet
    pod_discover: bool = False       # the topology says `super_pod_id: discover`
    chips_per_card: int | None = None  # A3 dies per card, for discovery (npu-smi's -i card -c chip)
    # the interface holding the host's address (GLOO/TP/HCCL_SOCKET_IFNAME): the topology's `nic:`,
    # else the lock file's; None: not known (not given, not discovered yet)
    nic: str | None = None
    nic_discover: bool = False  # the topology says `nic: discover`

    @property
    def superpod(self) -> bool:
        """A SuperPoD (A3) host: its instances get ranktable v1.2."""
        return self.super_pod_id is not None or self.pod_discover

    def device(self, device_id: int) -> Device | None:
        for d in self.devices:  # a loop, not next(genexpr): 16k ranks look their die up
            if d.id == device_id:
                return d
        return None


@dataclass(frozen=True, slots=True)
class Numa:
    cpunodebind: int | None = None
    physcpubind: str | None = None
    membind: int | None = None
    localalloc: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    memlock: str | None = None  # "unlimited" or KiB as text
    nofile: int | None = None
    numa: Numa | None = None


@dataclass(frozen=True, slots=True)
class Container:
    """How an owner's programs run in a container (topology `container:`, defaults merged key by key)."""

    image: str | None  # None: no image given anywhere (validate refuses it)
    engine: str = "docker"  # docker | podman | absolute path of a CLI-compatible binary
    mounts: tuple[str, ...] = ()
    shm_size: str | None = None
    privileged: bool = False
    user: str | None = None
    driver_mounts: bool = True
    network: str = "host"
    ipc: str = "host"
    init: bool = True
    stop_timeout: float = 20.0
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Probe:
    http: str | None = None
    tcp: str | None = None
    command: tuple[str, ...] | None = None
    log: str | None = None
    timeout: float = 5.0
    period: float = 1.0
    on: str = "every_host"  # or "first_host": an instance's first host only (the others serve nothing)


@dataclass(frozen=True, slots=True)
class MindieSpec:
    config: str  # the base config.json as the topology names it (Topology.inputs holds its bytes)
    port: int = 1120  # BackendConfig.multiNodesInferPort, MindIE's own default
    inter_node_tls: bool = False


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    role: str  # standalone | prefill | decode
    hosts: tuple[str, ...]
    devices: tuple[int, ...] | None
    processes: str  # per_device | per_host
    command: tuple[str, ...]
    cwd: str | None
    env: Env
    rendezvous_port: int | None  # None: the first free port from DEFAULT_RENDEZVOUS_PORT
    probe: Probe | None
    limits: Limits
    depends_on: tuple[str, ...]
    datasystem: str | None
    leader_args: tuple[str, ...] = ()  # appended on the first host (placeholders filled per host)
    worker_args: tuple[str, ...] = ()  # appended on the others
    framework: str | None = None  # atb | mindie-service | vllm-ascend; None: generic (frameworks.py)
    framework_version: str | None = None  # the stack's release, where a rule depends on it (stack_versions.py)
    mindie: MindieSpec | None = None
    container: Container | None = None  # None: its programs run on the host
    restart_with: tuple[str, ...] = ()  # restarted after any of these restarts, once it is ready again


@dataclass(frozen=True, slots=True)
class EtcdSpec:
    client_port: int = 2379
    peer_port: int = 2380
    data_dir: str | None = None
    listen: str = "0.0.0.0"
    binary: str = "etcd"


@dataclass(frozen=True, slots=True)
class DatasystemSpec:
    etcd: str
    port: int = 31501
    arena_per_tenant: int = 1
    remote_h2d_devices: tuple[int, ...] = ()
    enable_huge_tlb: bool | None = None   # None: on exactly when RH2D is (vllm-ascend kv_pool.md)
    enable_fallocate: bool | None = None  # None: off when RH2D is on, else dscli's default
    enable_worker_worker_batch_get: bool = False
    shared_memory_size_mb: int | None = None
    extra_args: tuple[str, ...] = ()
    dscli: str = "dscli"


@dataclass(frozen=True, slots=True)
class GenericSpec:
    command: tuple[str, ...]
    cwd: str | None = None
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    kind: str  # etcd | datasystem | generic
    hosts: tuple[str, ...]
    env: Env
    limits: Limits
    depends_on: tuple[str, ...]
    probe: Probe | None
    spec: EtcdSpec | DatasystemSpec | GenericSpec
    container: Container | None = None


@dataclass(frozen=True, slots=True)
class PDGroup:
    name: str
    schedulers: tuple[str, ...]  # validated to exactly one
    prefill: tuple[str, ...]
    decode: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DDCluster:
    id: int
    instance: str
    rank: int
    role: str  # prompt | decoder
    listen_port: int | None
    listen_ip: str | None


@dataclass(frozen=True, slots=True)
class DDLink:
    name: str
    clusters: tuple[int, ...]


@dataclass(frozen=True)
class Topology:
    file: str
    name: str
    hosts: tuple[Host, ...]
    instances: tuple[Instance, ...] = ()
    services: tuple[Service, ...] = ()
    pd_groups: tuple[PDGroup, ...] = ()
    dd_clusters: tuple[DDCluster, ...] = ()
    dd_links: tuple[DDLink, ...] = ()
    agent_port: int = 29390
    metrics_port: int | None = 29391   # the agent's /metrics; None: no endpoint
    metrics_listen: str = "address"    # address | loopback | any | an IPv4 address
    preflight: bool = True
    restart_max: int = 3
    restart_window: float = 600.0
    # The parsed document, for the position of any path (Source.value_loc); not part of
    # equality or hashing. None: a topology built in code, diagnostics carry no position.
    locs: Source | None = field(default=None, compare=False, hash=False, repr=False)
    # Files the topology names (a MindIE base config.json), read by the operator side: path as
    # written -> bytes; absent: not readable (validate says so).
    inputs: Mapping[str, bytes] = field(default_factory=dict, compare=False, hash=False, repr=False)

    # Name indexes, built once: large topologies look names up per rank.
    @cached_property
    def _hosts_by_name(self) -> dict[str, Host]:
        return {h.name: h for h in reversed(self.hosts)}  # reversed: the first of duplicates wins

    @cached_property
    def _instances_by_name(self) -> dict[str, Instance]:
        return {i.name: i for i in reversed(self.instances)}

    @cached_property
    def _services_by_name(self) -> dict[str, Service]:
        return {s.name: s for s in reversed(self.services)}

    def host(self, name: str) -> Host | None:
        return self._hosts_by_name.get(name)

    def instance(self, name: str) -> Instance | None:
        return self._instances_by_name.get(name)

    def service(self, name: str) -> Service | None:
        return self._services_by_name.get(name)
