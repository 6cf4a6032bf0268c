"""Which network interface of this host holds an address (for GLOO/TP/HCCL_SOCKET_IFNAME).

What GLOO_SOCKET_IFNAME, TP_SOCKET_IFNAME and HCCL_SOCKET_IFNAME must name for the stack's CPU-side
traffic to leave by the host's own address.
Stdlib only (the host has python3 and nothing else): IPv4 by the SIOCGIFADDR ioctl on each interface
socket.if_nameindex() lists (an interface's primary address), IPv6 from /proc/net/if_inet6. A name
that is not an address (an SSH host name) is resolved here, on the host, as its own resolver says.
"""
from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

SIOCGIFADDR = 0x8915  # linux/sockios.h
IF_INET6 = "/proc/net/if_inet6"


def ipv4_of(name: str) -> str | None:
    """The primary IPv4 address of interface ``name``; None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            reply = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:  # EADDRNOTAVAIL: no IPv4 address on it
            return None
    return socket.inet_ntoa(reply[20:24])  # struct ifreq: 16 bytes of name, then sockaddr_in (family, port, addr)


def ipv6_addresses() -> dict[str, str]:
    """IPv6 address -> interface, from the kernel's table (empty without IPv6)."""
    out: dict[str, str] = {}
    try:
        with open(IF_INET6, encoding="ascii") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 6:
                    out[str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))] = fields[5]
    except OSError:
        pass
    return out


def addresses(name: str) -> list[str]:
    """The IP addresses ``name`` stands for on this host (itself when it is one)."""
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        return []
    return list(dict.fromkeys(str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos))


def interface_of(address: str) -> str | None:
    """The interface that holds ``address`` (or what it resolves to); None when no interface does."""
    wanted = addresses(address)
    v4 = {a for a in wanted if ipaddress.ip_address(a).version == 4}
    if v4:
        for _, name in socket.if_nameindex():
            if ipv4_of(name) in v4:
                return name
    v6 = ipv6_addresses()
    return next((v6[a] for a in wanted if a in v6), None)


def act_nic(root: str, args: list[str]) -> dict:
    """nic ROOT ADDRESS: {"nic": the interface holding ADDRESS or None, "addresses": what it resolved to}."""
    address = args[0]
    return {"nic": interface_of(address), "addresses": addresses(address)}
