#!/usr/bin/env bash
# The project's one test command (the README's, and what .ci/run calls).
# It installs what the tests need on a fresh Debian machine, builds a venv, and runs
# every tier: unit, integration (real supervisord), e2e (network-namespace testbed, root).
set -uo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || need_pkgs+=("$2"); }
want /usr/sbin/sshd openssh-server
want ssh openssh-client
want etcd etcd-server
want etcdctl etcd-client
want numactl numactl
want ip iproute2
want gcc gcc
want make make
# Containers on testbed hosts (tests/containers.py), as root with --net host: no slirp4netns,
# fuse-overlayfs or uidmap needed. runc: crun (podman's default) fails on cgroup v1/hybrid.
want podman podman
want runc runc
want conmon conmon
want catatonit catatonit
# Prometheus' promtool (alert rule tests) and prometheus itself (the e2e scrape); Debian's package
# starts no service where policy-rc.d forbids it (containers), and the tests start their own.
want promtool prometheus
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tests/run.sh: installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
      || { echo "tests/run.sh: apt-get install failed" >&2; exit 1; }
    # the tests run prometheus themselves: none of the package's services may keep running
    if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now prometheus.service prometheus-node-exporter.service >/dev/null 2>&1 || true
    fi
  else
    echo "tests/run.sh: not root, so not installing ${need_pkgs[*]}; tests that need them will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv || { echo "tests/run.sh: python3 -m venv failed" >&2; exit 1; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' \
  || { echo "tests/run.sh: pip install failed" >&2; exit 1; }

.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
