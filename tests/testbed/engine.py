"""Container support for testbed hosts: cgroup mounts, a podman wrapper, label-based cleanup.

Stdlib only, like the rest of the testbed. What `Testbed.up(n, containers=True)` uses:
- `cgroup_mount_script()`: shell commands that mirror the machine's /sys/fs/cgroup mounts;
  run in a host's mount namespace (where `ip netns exec` left a fresh sysfs without them)
  before sshd, so runc finds its cgroups in every session of the host;
- `write_engine_wrapper()`: an executable `podman --runtime runc` (crun fails on this kind of
  machine: "cgroups in hybrid mode not supported") that can add labels to `run`/`create`;
- `remove_containers()`: `podman rm -f` of every container matching label filters.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

PODMAN = "podman"
RUNTIME = "runc"
CGROUP_ROOT = "/sys/fs/cgroup"
# Every container a testbed's engine wrapper starts carries this label, value = the testbed's
# id; `Testbed.down()` removes exactly those (container storage is shared machine-wide).
TESTBED_LABEL = "launcher-testbed.id"


def cgroup_mounts(mountinfo: str | None = None) -> list[tuple[str, str, str]]:
    """(fstype, options, mount point) of the machine's mounts at and below /sys/fs/cgroup, in
    mount order: tmpfs + one cgroup v1 hierarchy per controller set + cgroup2 (hybrid), or one
    cgroup2 (unified). Options are the superblock's, minus rw/ro and release_agent: exactly the
    controller combinations the machine has (any other combination fails with EBUSY)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    out: list[tuple[str, str, str]] = []
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        target = fields[4].replace("\\040", " ")
        if not (target == CGROUP_ROOT or target.startswith(CGROUP_ROOT + "/")):
            continue
        fstype, _source, super_opts = post.split()[:3]
        opts = [o for o in super_opts.split(",") if o not in ("rw", "ro") and not o.startswith("release_agent=")]
        if fstype == "tmpfs":
            opts = [o for o in opts if o.startswith("mode=")] or ["mode=755"]
        elif fstype == "cgroup" and opts and all(o.startswith("name=") or o == "xattr" for o in opts):
            opts = ["none", *opts]  # a named hierarchy without controllers: -o none,name=systemd
        out = [m for m in out if m[2] != target]  # an over-mount replaces what it hides
        out.append((fstype, ",".join(opts), target))
    return out


def cgroup_mount_script(mounts: Sequence[tuple[str, str, str]] | None = None) -> str:
    """Shell commands (for `sh -e`) that make those mounts; mkdir for v1 hierarchy dirs, which
    a fresh tmpfs does not have."""
    lines = []
    for fstype, opts, target in (cgroup_mounts() if mounts is None else mounts):
        if target != CGROUP_ROOT:
            lines.append(f"mkdir -p {shlex.quote(target)}")
        o = f" -o {shlex.quote(opts)}" if opts else ""
        lines.append(f"mount -t {fstype}{o} {fstype} {shlex.quote(target)}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_engine_wrapper(path: str | os.PathLike[str], labels: Mapping[str, str] | None = None,
                         podman: str | None = None) -> str:
    """Write an executable script at `path` that runs `podman --runtime runc "$@"`, adding
    `--label K=V` for each of `labels` to `run`, `create`, `container run|create`. Returns the
    absolute path. The launcher's `container.engine` can point at it (CLI-compatible)."""
    path = Path(path).absolute()
    exe = podman or shutil.which(PODMAN) or f"/usr/bin/{PODMAN}"
    add = " ".join(shlex.quote(f"--label={k}={v}") for k, v in (labels or {}).items())
    body = f"""#!/bin/sh
# podman with the runc runtime (crun fails here: cgroups in hybrid mode); written by tests/testbed.
P="{exe} --runtime {RUNTIME}"
"""
    if add:
        body += f"""case "$1" in
  run|create) sub=$1; shift; exec $P "$sub" {add} "$@" ;;
  container) case "$2" in run|create) sub=$2; shift 2; exec $P container "$sub" {add} "$@" ;; esac ;;
esac
"""
    body += 'exec $P "$@"\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return str(path)


def remove_containers(label_filters: str | Sequence[str], *, timeout: float = 60) -> list[str]:
    """Force-remove every container matching all `label_filters` ("key=value" or "key"), in any
    state. Returns the removed IDs. No-op without podman."""
    if isinstance(label_filters, str):
        label_filters = [label_filters]
    if shutil.which(PODMAN) is None:
        return []
    argv = [PODMAN, "--runtime", RUNTIME, "ps", "-a", "-q", "--no-trunc"]
    for f in label_filters:
        argv += ["--filter", f"label={f}"]
    ids = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True).stdout.split()
    removed = list(ids)
    if ids:
        # A container whose processes were SIGKILLed behind podman's back stays "Stopping": the
        # first rm fails ("container state improper") but records it as stopped; the second works.
        for attempt in (1, 2):
            proc = subprocess.run([PODMAN, "--runtime", RUNTIME, "rm", "-f", "-t", "0", *ids],
                                  capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                break
            # one that vanished meanwhile (--rm) is fine; others are not
            ids = [i for i in subprocess.run(argv, capture_output=True, text=True, timeout=timeout).stdout.split()
                   if i in ids]
            if not ids:
                break
            if attempt == 2:
                raise RuntimeError(f"podman rm -f {' '.join(ids)} exited {proc.returncode}: "
                                   f"{proc.stderr.strip()}")
        # ... and leaves its runc state and cgroups (libpod_parent/libpod-ID) behind: runc drops
        # both (podman's container ID is runc's). A no-op for containers podman stopped itself.
        for cid in removed:
            subprocess.run([RUNTIME, "delete", "--force", cid], capture_output=True, timeout=timeout)
    return removed
