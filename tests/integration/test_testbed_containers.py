"""Testbed hosts run real podman containers (`Testbed.up(n, containers=True)`; root, podman,
runc; skips with the reason otherwise).

A container started over SSH on h1 with `--net host` has h1's network and nothing else, one
on h2 runs beside it, the testbed's label finds both, and `down()` leaves no container, runc
state or cgroup of the testbed behind. Checks look at podman and the kernel directly.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests import containers
from tests.containers import IMAGE, IMAGE_LABEL, podman_argv, run_args
from tests.testbed import Testbed
from tests.testbed.engine import cgroup_mount_script, cgroup_mounts

pytestmark = pytest.mark.e2e
TESTBED_HOSTS = 2

BIND = """python3 -c '
import socket, sys
for addr in sys.argv[1:]:
    s = socket.socket()
    try:
        s.bind((addr, 0)); print(addr, "ok")
    except OSError as e:
        print(addr, "fail", e.errno)
    s.close()
print("hostname", socket.gethostname())
' """


def _ids(*filters: str) -> list[str]:
    argv = podman_argv("ps", "-a", "-q", "--no-trunc")
    for f in filters:
        argv += ["--filter", f]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()


def _start(tb: Testbed, host: str, name: str, command: str, *, detach: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(tb.engine), "run", *(["-d"] if detach else ["--rm"]), "--name", name, *run_args(), IMAGE,
            "/bin/sh", "-c", command]
    return tb.ssh(host, shlex.join(argv), user="root", timeout=120)


def test_the_image_builds_idempotently(test_image: str) -> None:
    before = subprocess.run(podman_argv("image", "inspect", "--format", "{{.Id}} {{index .Config.Labels \"%s\"}}"
                                        % IMAGE_LABEL, test_image), capture_output=True, text=True, check=True)
    assert test_image == IMAGE
    assert containers.test_image() == IMAGE  # second build: a no-op
    after = subprocess.run(podman_argv("image", "inspect", "--format", "{{.Id}} {{index .Config.Labels \"%s\"}}"
                                       % IMAGE_LABEL, IMAGE), capture_output=True, text=True, check=True)
    assert before.stdout == after.stdout
    assert after.stdout.split()[1] == containers.IMAGE_VERSION


def test_cgroup_mounts_mirror_the_machine() -> None:
    script = cgroup_mount_script([("tmpfs", "mode=755", "/sys/fs/cgroup"),
                                  ("cgroup", "cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
                                  ("cgroup", "none,name=systemd", "/sys/fs/cgroup/systemd")])
    assert "mount -t cgroup -o cpu,cpuacct cgroup /sys/fs/cgroup/cpu,cpuacct\n" in script
    info = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
            "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
            "42 23 0:39 / /sys/kernel/debug rw - debugfs debugfs rw\n")
    assert cgroup_mounts(info) == [("tmpfs", "mode=755", "/sys/fs/cgroup"),
                                   ("cgroup", "none,xattr,name=systemd", "/sys/fs/cgroup/systemd"),
                                   ("cgroup2", "nsdelegate", "/sys/fs/cgroup/unified")]
    assert cgroup_mounts("9 1 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n") == [("cgroup2", "", "/sys/fs/cgroup")]


def test_a_container_on_a_host_has_that_hosts_network(container_testbed: Testbed) -> None:
    tb = container_testbed
    h1, h2 = tb.hosts[:2]
    t0 = time.monotonic()
    proc = _start(tb, "h1", f"lt-{tb.id}-h1-bind", BIND + f"{h1.address} {h2.address}")
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert f"{h1.address} ok" in proc.stdout
    assert f"{h2.address} fail" in proc.stdout  # 99: EADDRNOTAVAIL, h2's address is not here
    assert "hostname h1" in proc.stdout  # --net host shares the host's UTS namespace too
    assert took < 30, f"ssh + podman run --rm took {took:.1f}s"


def test_testbed_run_sees_the_same_cgroups_as_a_session(container_testbed: Testbed) -> None:
    tb = container_testbed
    proc = tb.run("h2", [str(tb.engine), "run", "--rm", *run_args(), IMAGE, "python3", "-c",
                         "import socket; print(socket.gethostname())"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "h2"
    mounts = tb.run("h2", ["cat", "/proc/self/mountinfo"]).stdout
    assert " /sys/fs/cgroup/memory " in mounts or " /sys/fs/cgroup " in mounts


def test_containers_on_two_hosts_run_side_by_side_and_down_removes_them(
        testbed_factory, test_image: str) -> None:
    tb = testbed_factory(2, containers=True)
    label = f"label={tb.container_label}"
    for h in tb.hosts:
        proc = _start(tb, h.name, f"lt-{tb.id}-{h.name}-sleep", "exec sleep 300", detach=True)
        assert proc.returncode == 0, proc.stderr
    out = subprocess.run(podman_argv("ps", "--filter", label, "--format", "{{.Names}} {{.Pid}}"),
                         capture_output=True, text=True, check=True).stdout
    names = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()}
    assert set(names) == {f"lt-{tb.id}-h1-sleep", f"lt-{tb.id}-h2-sleep"}
    for h in tb.hosts:  # each runs in its own host's network namespace
        pid = names[f"lt-{tb.id}-{h.name}-sleep"]
        assert Path(f"/proc/{pid}/ns/net").stat().st_ino == Path("/run/netns", h.netns).stat().st_ino
    ids = _ids(label)
    tb.kill_sshd("h2")  # h2's container cannot be stopped from inside h2 any more: the fallback
    tb.down()
    assert _ids(label) == []
    left = [p for cid in ids for p in (*Path("/sys/fs/cgroup").glob(f"*/libpod_parent/libpod-{cid}"),
                                       Path("/run/runc", cid)) if p.exists()]
    assert left == []


def test_engine_wrapper_is_executable_and_absolute(container_testbed: Testbed) -> None:
    path = containers.engine_wrapper(container_testbed.root / "engines", {"x.y": "z"})
    assert Path(path).is_absolute() and Path(path).stat().st_mode & 0o111
    proc = container_testbed.ssh("h2", f"{shlex.quote(path)} version --format '{{{{.Client.Version}}}}'", user="root")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert "--label=x.y=z" in Path(path).read_text()


def test_ulimit_args_stay_within_the_hard_limits() -> None:
    import resource
    args = containers.ulimit_args(nofile=10**9)
    assert args[0] == "--ulimit" and args[1].startswith("nofile=")
    soft, hard = (int(x) for x in args[1].split("=")[1].split(":"))
    assert soft == hard <= resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_without_podman_the_reason_says_what_is_missing(monkeypatch) -> None:
    import os
    import shutil
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("podman", "runc") else real(name, *a, **k))
    reason = containers.unavailable_reason.__wrapped__()  # uncached
    if os.geteuid() != 0:
        assert reason == "not running as root"
    else:
        assert reason is not None and reason.startswith("missing podman, runc"), reason
