"""Where an instance's ranks sit and which ports a service takes, defined once for validate and expand."""
from __future__ import annotations

from dataclasses import dataclass

from .model import DatasystemSpec, EtcdSpec, GenericSpec, Instance, Topology


def rank_placement(topo: Topology, inst: Instance) -> list[tuple[str, int]]:
    """(host, device id) of every rank of an instance, in rank order: the instance's host order,
    then ascending device id (seed 004). Hosts the topology does not declare are skipped (validate
    reports them)."""
    out: list[tuple[str, int]] = []
    for hname in inst.hosts:
        host = topo.host(hname)
        if host is None:
            continue
        ids = inst.devices if inst.devices is not None else tuple(d.id for d in host.devices)
        out.extend((hname, d) for d in sorted(ids))
    return out


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A TCP port a service listens on at its host's address."""

    key: str       # the topology key that sets it (client_port, peer_port, port, ports)
    port: int
    client: bool   # what its clients connect to (etcd's client port, a datasystem worker's port);
    #                a generic service's ports are its own business: the launcher knows no clients


def service_ports(spec: EtcdSpec | DatasystemSpec | GenericSpec) -> tuple[ServicePort, ...]:
    """Every port a service of this kind listens on, in the topology's key order."""
    if isinstance(spec, EtcdSpec):
        return (ServicePort("client_port", spec.client_port, True), ServicePort("peer_port", spec.peer_port, False))
    if isinstance(spec, DatasystemSpec):
        return (ServicePort("port", spec.port, True),)
    return tuple(ServicePort("ports", p, False) for p in spec.ports)
