"""Seed 003 as rendered: etcd's probe endpoint, the dscli path, and the fake dscli accepting
exactly what the launcher renders (so the e2e test's fake cannot drift from the launcher)."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from types import ModuleType

import pytest

from launcher.core.pipeline import compile_text, rendered
from launcher.deploy.files import compile_file
from launcher.core.plan import Program
from launcher.core.render import ULIMIT_EXIT
from tests.helpers import CONFIGS, ROOT

FAKE = ROOT / "tests" / "fakes" / "dscli"

TOPOLOGY = """\
version: 1
name: yr
defaults: {preflight: false, deploy_dir: /srv/launcher}
hosts:
  - {name: a, address: 10.0.0.1, devices: {0: 10.40.0.1, 1: 10.40.1.1}}
  - {name: b, address: 10.0.0.2, devices: {0: 10.40.0.2, 1: 10.40.1.2}}
  - {name: c, address: 10.0.0.3, devices: {0: 10.40.0.3, 1: 10.40.1.3}}
services:
  - {name: etcd, kind: etcd, hosts: [a, b], client_port: 2345, peer_port: 2346, binary: /opt/etcd/bin/etcd}
  - name: ds
    kind: datasystem
    hosts: [a, b, c]
    etcd: etcd
    port: 31599
    dscli: /srv/fakes/dscli
    arena_per_tenant: 2
    remote_h2d_devices: [0, 1]
    enable_huge_tlb: true
    enable_worker_worker_batch_get: true
    shared_memory_size_mb: 1024
    limits: {numa: {physcpubind: "0-3", localalloc: true}}
instances:
  - {name: m, hosts: [c], devices: [0], datasystem: ds, command: [serve]}
"""


def fake_module() -> ModuleType:
    """The fake's own parser, loaded from its file (it has no .py suffix: it is an executable)."""
    loader = importlib.machinery.SourceFileLoader("fake_dscli", str(FAKE))
    spec = importlib.util.spec_from_loader("fake_dscli", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_dscli"] = module  # its dataclasses look their module up while being built
    loader.exec_module(module)
    return module


def programs(text: str, owner: str) -> dict[str, Program]:
    plan = compile_text(text).plan
    return {hp.host.name: p for hp in plan.hosts for p in hp.programs if p.owner == owner}


def test_etcd_probe_asks_each_member_at_its_own_address() -> None:
    # probes run on the service's hosts: 127.0.0.1 would work, but the host address is what
    # clients use (listen is 0.0.0.0), so that is what must answer
    etcd = programs(TOPOLOGY, "etcd")
    assert set(etcd) == {"a", "b"}
    for host, address in (("a", "10.0.0.1"), ("b", "10.0.0.2")):
        assert etcd[host].probe is not None
        # etcdctl beside a binary given as a path: such a host may have none on PATH
        assert etcd[host].probe.command == ("/opt/etcd/bin/etcdctl", "--endpoints", f"http://{address}:2345",
                                            "--dial-timeout", "2s", "--command-timeout", "3s", "endpoint", "health")
        assert etcd[host].probe.timeout > 3  # etcdctl answers for itself before the probe kills it
        assert etcd[host].argv[0] == "/opt/etcd/bin/etcd"
        assert f"http://{address}:2345" in etcd[host].argv


def test_etcd_probe_uses_etcdctl_from_path_with_the_default_binary() -> None:
    etcd = programs(TOPOLOGY.replace(", binary: /opt/etcd/bin/etcd", ""), "etcd")
    assert etcd["a"].argv[0] == "etcd"
    assert etcd["a"].probe is not None and etcd["a"].probe.command is not None
    assert etcd["a"].probe.command[0] == "etcdctl"


def test_dscli_path_addresses_and_numa_flags() -> None:
    ds = programs(TOPOLOGY, "ds")
    for host, address in (("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")):
        argv = list(ds[host].argv)
        assert argv[:2] == ["/srv/fakes/dscli", "start"]
        # NUMA flags belong to dscli itself, before -w; the launcher does not wrap it in numactl
        assert argv[2:argv.index("-w")] == ["--physcpubind", "0-3", "--localalloc"]
        assert not ds[host].numa_via_numactl
        assert argv[argv.index("--worker_address") + 1] == f"{address}:31599"
        assert argv[argv.index("--etcd_address") + 1] == "10.0.0.1:2345,10.0.0.2:2345"
        assert ds[host].probe is not None and ds[host].probe.tcp == f"{address}:31599"
    model = programs(TOPOLOGY, "m")["c"]
    assert dict(model.env)["DS_WORKER_ADDR"] == "10.0.0.3:31599"


def test_worker_script_lifts_memlock_without_numactl() -> None:
    _, files = rendered(compile_text(TOPOLOGY).plan)
    script = files["a"]["bin/ds.sh"].content.decode()
    assert "\nulimit -l unlimited || " in script  # the datasystem default: seed 003's `ulimit -l unlimited`
    assert "numactl" not in script
    assert "exec /srv/fakes/dscli start --physcpubind 0-3 --localalloc -w " in script


def test_a_limit_the_login_cannot_grant_is_named_with_the_fix() -> None:
    """The rendered `ulimit` line run by a real sh, unprivileged, below a lowered hard limit."""
    _, files = rendered(compile_text(TOPOLOGY).plan)
    script = files["a"]["bin/ds.sh"].content.decode()
    line = next(ln for ln in script.splitlines() if ln.startswith("ulimit -l "))
    drop = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None  # root could lift it again
    proc = subprocess.run(["sh", "-c", f"ulimit -l 64\n{line}\necho started"], capture_output=True, text=True,
                          preexec_fn=drop, timeout=30)
    assert proc.returncode == ULIMIT_EXIT and "started" not in proc.stdout
    assert ("ascend-launcher: cannot set max locked memory (ulimit -l) to unlimited: "
            "the hard limit of this login is 64; raise the hard limit for this user") in proc.stderr


@pytest.mark.parametrize("source", ["full", "seed"])
def test_fake_dscli_accepts_what_the_launcher_renders(source: str) -> None:
    fake = fake_module()
    if source == "full":
        argvs = [p.argv for p in programs(TOPOLOGY, "ds").values()]
    else:
        plan = compile_file(str(CONFIGS / "yuanrong-rh2d.yaml")).plan
        argvs = [p.argv for hp in plan.hosts for p in hp.programs if p.owner == "ds-worker"]
    assert argvs
    for argv in argvs:
        args = fake.parse(list(argv[1:]))
        assert args.worker_address == argv[argv.index("--worker_address") + 1]
        assert args.numa == list(argv[2:argv.index("-w")])


def test_fake_dscli_rejects_an_argument_the_launcher_never_renders() -> None:
    fake = fake_module()
    argv = list(programs(TOPOLOGY, "ds")["a"].argv[1:]) + ["--made_up_flag", "1"]
    with pytest.raises(fake.UsageError, match="unknown worker option '--made_up_flag'"):
        fake.parse(argv)
