"""The side services' command lines and probes, as their vendors document them.

etcd: one member per host, a static cluster (seed 003). openYuanrong's datasystem worker:
`dscli start ... -w ...` (seed 003), RH2D's required flags from vllm-ascend kv_pool.md. Pure.
"""
from __future__ import annotations

import posixpath

from .model import DatasystemSpec, EtcdSpec, Host, Limits, Probe, Service


def etcd_argv(svc: Service, spec: EtcdSpec, host: Host, hosts: dict[str, Host], root: str) -> tuple[str, ...]:
    """etcd with the flags of seed 003; a multi-host etcd gets its whole initial cluster."""
    member = f"{svc.name}-{host.name}"
    cluster = ",".join(f"{svc.name}-{h}=http://{hosts[h].address}:{spec.peer_port}" for h in svc.hosts)
    return (spec.binary, "--name", member, "--data-dir", spec.data_dir or f"{root}/data/{svc.name}",
            "--listen-client-urls", f"http://{spec.listen}:{spec.client_port}",
            "--advertise-client-urls", f"http://{host.address}:{spec.client_port}",
            "--listen-peer-urls", f"http://{spec.listen}:{spec.peer_port}",
            "--initial-advertise-peer-urls", f"http://{host.address}:{spec.peer_port}",
            "--initial-cluster", cluster)


def etcd_probe(spec: EtcdSpec, host: Host) -> Probe:
    """`etcdctl endpoint health` at this member's address, what clients use, run by `up` on the
    member's host; with etcd's HTTP /health, which is what an agent holding a dependent's
    restart checks from the dependent's host. With
    `binary:` a path, etcdctl is the one beside it, as etcd's release archives ship them, since
    such a host may have no etcdctl on PATH; else etcdctl from PATH."""
    etcdctl = posixpath.join(posixpath.dirname(spec.binary), "etcdctl") if "/" in spec.binary else "etcdctl"
    # etcdctl gives up (and says why: "unhealthy ... context deadline exceeded") before the
    # probe's 5 s would kill it silently; its own default command timeout is those same 5 s
    # and etcd's own GET /health, which an agent elsewhere checks instead (no etcdctl needed there)
    return Probe(http=f"http://{host.address}:{spec.client_port}/health",
                 command=(etcdctl, "--endpoints", f"http://{host.address}:{spec.client_port}",
                          "--dial-timeout", "2s", "--command-timeout", "3s", "endpoint", "health"), timeout=5.0)


def dscli_argv(spec: DatasystemSpec, worker: str, etcd: str, limits: Limits) -> tuple[str, ...]:
    """`dscli start [NUMA flags] -w <worker flags>` as in seed 003; NUMA flags go to dscli itself."""
    argv = [spec.dscli, "start"]
    numa = limits.numa
    if numa:
        if numa.cpunodebind is not None:
            argv += ["--cpunodebind", str(numa.cpunodebind)]
        if numa.physcpubind:
            argv += ["--physcpubind", numa.physcpubind]
        if numa.localalloc:
            argv.append("--localalloc")
    argv += ["-w", "--worker_address", worker, "--etcd_address", etcd,
             "--arena_per_tenant", str(spec.arena_per_tenant)]
    if spec.remote_h2d_devices:
        argv += ["--remote_h2d_device_ids", ",".join(map(str, spec.remote_h2d_devices))]
    rh2d = bool(spec.remote_h2d_devices)  # vllm-ascend kv_pool.md: RH2D needs huge TLB, no fallocate
    huge, falloc = (rh2d if spec.enable_huge_tlb is None else spec.enable_huge_tlb,
                    (False if rh2d else None) if spec.enable_fallocate is None else spec.enable_fallocate)
    if huge:
        argv += ["--enable_huge_tlb", "true"]
    if falloc is not None:
        argv += ["--enable_fallocate", str(falloc).lower()]
    if spec.enable_worker_worker_batch_get:
        argv += ["--enable_worker_worker_batch_get", "true"]
    if spec.shared_memory_size_mb:
        argv += ["--shared_memory_size_mb", str(spec.shared_memory_size_mb)]
    return tuple(argv) + spec.extra_args

