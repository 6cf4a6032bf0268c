"""Helpers and pytest fixtures for tests that run real podman containers (root, runc).

Registered as a pytest plugin in tests/conftest.py. No registry is reachable in CI: the test
image is built offline from an almost empty rootfs and runs the host's own /usr (mount it:
`-v /usr:/usr:ro`), so `python3` inside is the machine's /usr/bin/python3.

- `unavailable_reason()`: why containers cannot run here (not root, no podman/runc/catatonit,
  podman cannot run one), or None;
- `test_image()`: builds `localhost/ascend-launcher-test:<IMAGE_VERSION>` once per machine;
- `engine_wrapper(dir)`: an executable `podman --runtime runc "$@"` for `container.engine`;
- `ulimit_args()`: `--ulimit` options within this machine's hard limits (podman's defaults fail);
- `remove_containers(label_filter)`: force-remove by label, for teardown;
- fixtures `container_testbed` (module: `TESTBED_HOSTS` hosts, default 2, containers=True)
  and `test_image` (session: the image name).
"""
from __future__ import annotations

import fcntl
import functools
import os
import resource
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.testbed import Testbed
from tests.testbed.core import BASE_DIR
from tests.testbed.engine import PODMAN, RUNTIME, TESTBED_LABEL, write_engine_wrapper
from tests.testbed.engine import remove_containers as _remove_containers

IMAGE_REPO = "localhost/ascend-launcher-test"
IMAGE_VERSION = "1"  # bump when the rootfs recipe below changes: a new tag is built beside the old
IMAGE = f"{IMAGE_REPO}:{IMAGE_VERSION}"
IMAGE_LABEL = "ascend-launcher.test-image"  # value: IMAGE_VERSION
SKIP_PREFIX = "containers need root and a working podman"
DEFAULT_HOSTS = 2
_LOCK = BASE_DIR / ".image.lock"
_ROOTFS_DIRS = ("usr", "etc", "tmp", "proc", "sys", "dev", "run", "root")
_ROOTFS_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}


def podman_argv(*args: str) -> list[str]:
    """`podman --runtime runc ARGS` (crun fails on this kind of machine)."""
    return [PODMAN, "--runtime", RUNTIME, *args]


def ulimit_args(nofile: int = 1024, nproc: int = 1024) -> list[str]:
    """`--ulimit nofile=S:H --ulimit nproc=S:H`, soft = hard = the wanted value clamped to this
    process's hard limit: without them podman passes its own defaults and this VM refuses to
    raise limits ("setrlimit RLIMIT_NOFILE: Operation not permitted")."""
    out = []
    for name, res, want in (("nofile", resource.RLIMIT_NOFILE, nofile), ("nproc", resource.RLIMIT_NPROC, nproc)):
        hard = resource.getrlimit(res)[1]
        v = want if hard == resource.RLIM_INFINITY else min(want, hard)
        out += ["--ulimit", f"{name}={v}:{v}"]
    return out


def container_defaults(tb: Testbed, image: str, user: str | None = None) -> str:
    """The `container:` block (under `defaults:`) the e2e tests run their programs with: the test
    image on the testbed's engine, the host's /usr read-only, limits it can grant, a short stop."""
    import json
    return (f"  container:\n    engine: {tb.engine}\n    image: {image}\n" + (f"    user: {user}\n" if user else "")
            + f"    mounts: [\"/usr:/usr:ro\"]\n    args: {json.dumps(ulimit_args())}\n    stop_timeout: 5\n")


def run_args(*, net_host: bool = True) -> list[str]:
    """The options every test container needs here: --init (catatonit reaps), host network,
    the host's /usr read-only (the image has none), ulimits."""
    return ["--init", *(["--net", "host"] if net_host else []), "-v", "/usr:/usr:ro", *ulimit_args()]


def engine_wrapper(dir: str | os.PathLike[str], labels: Mapping[str, str] | None = None,
                   name: str = "podman") -> str:
    """Write DIR/NAME, an executable that execs `podman --runtime runc "$@"` (adding `--label`
    for each of `labels` to run/create), and return its absolute path. Testbed hosts see only
    paths outside /tmp, /srv and home: use a dir under the testbed's root (or `tb.engine`)."""
    return write_engine_wrapper(Path(dir) / name, labels)


def remove_containers(label_filter: str | Sequence[str]) -> list[str]:
    """Force-remove every container matching the label filter(s) ("key=value" or "key")."""
    return _remove_containers(label_filter)


def test_image() -> str:
    """Build the test image once per machine and return its name. Idempotent; a machine-wide
    lock makes two pytest processes racing here build it once."""
    if _image_exists(IMAGE):
        return IMAGE
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _image_exists(IMAGE):
                _build_image()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return IMAGE


test_image.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


def _image_exists(name: str) -> bool:
    return subprocess.run(podman_argv("image", "exists", name), capture_output=True).returncode == 0


def _build_image() -> None:
    with tempfile.TemporaryDirectory(prefix="lt-image-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        for d in _ROOTFS_DIRS:
            (rootfs / d).mkdir(parents=True)
        os.chmod(rootfs / "tmp", 0o1777)
        for link, target in _ROOTFS_LINKS.items():
            (rootfs / link).symlink_to(target)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        tar = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar, "w") as tf:
            for p in sorted(rootfs.iterdir()):
                tf.add(p, arcname=p.name)
        proc = subprocess.run(podman_argv(
            "import", "--change", f"LABEL {IMAGE_LABEL}={IMAGE_VERSION}",
            "--change", "CMD [\"/bin/sh\"]", "--message", "ascend-launcher test image (tests/containers.py)",
            str(tar), IMAGE), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman import {IMAGE} exited {proc.returncode}: {proc.stderr.strip()}")


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why this machine cannot run test containers, or None. Checks for real: builds the test
    image and runs `true` in it (once per process)."""
    if os.geteuid() != 0:
        return "not running as root"
    missing = [t for t in (PODMAN, RUNTIME, "conmon", "catatonit") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install podman runc catatonit)"
    try:
        image = test_image()
        proc = subprocess.run(podman_argv("run", "--rm", *run_args(), image, "/bin/sh", "-c", "true"),
                              capture_output=True, text=True, timeout=120)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"podman cannot build the test image: {exc}"
    if proc.returncode != 0:
        return f"podman cannot run a container: exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
    return None


def skip_unless_available() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"{SKIP_PREFIX}: {reason}")


@pytest.fixture(name="test_image", scope="session")
def _test_image_fixture() -> str:
    skip_unless_available()
    return test_image()


@pytest.fixture(scope="module")
def container_testbed(request: pytest.FixtureRequest,
                      testbed_factory: Callable[..., Testbed]) -> Iterator[Testbed]:
    """A testbed of `TESTBED_HOSTS` hosts (module global, default 2) that run containers;
    `down` at module end also removes every container labelled with the testbed's id."""
    skip_unless_available()
    tb = testbed_factory(getattr(request.module, "TESTBED_HOSTS", DEFAULT_HOSTS), containers=True)
    try:
        yield tb
    finally:
        tb.down()


__all__ = ["IMAGE", "IMAGE_LABEL", "TESTBED_LABEL", "container_testbed", "engine_wrapper", "podman_argv",
           "remove_containers", "run_args", "test_image", "ulimit_args", "unavailable_reason"]
