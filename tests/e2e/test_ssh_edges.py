"""The OpenSSH client's edges on the testbed (issue 11, §9): real sshd on every host, and the
real `ssh` client behind a wrapper whose `-O exit` hangs, as with a stuck control master.
`down` must stop everything and end with a warning, not a traceback or a hang."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, host_entry, run_cli, topology_head

TESTBED_HOSTS = 2


def _deployment_processes(tb, name: str) -> list[str]:
    """Each host's supervisord of the deployment and every process under it (one pid namespace)."""
    out = []
    for h in tb.hosts:
        rows = [ln.split(None, 2) for ln in tb.run(h.name, ["ps", "-eo", "pid=,ppid=,args="]).stdout.splitlines()]
        tree = {pid for pid, _, args in rows if f"/srv/launcher/{name}/{h.name}/" in args}
        grown = True
        while grown:
            more = {pid for pid, ppid, _ in rows if ppid in tree} - tree
            tree |= more
            grown = bool(more)
        out += [args for pid, _, args in rows if pid in tree]
    return out


def test_down_over_openssh_when_ssh_O_exit_hangs(testbed, tmp_path):
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        pytest.skip("needs the OpenSSH client")
    base = Path(tempfile.mkdtemp(prefix="se-", dir="/tmp"))  # short: the ControlPath lives under it
    bindir = base / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text(
        "#!/bin/sh\nprev=\nfor a in \"$@\"; do\n"
        "  if [ \"$prev\" = -O ] && [ \"$a\" = exit ]; then echo $$ >> \"$HUNG_PIDS\"; exec sleep 3600; fi\n"
        f"  prev=$a\ndone\nexec {real_ssh} \"$@\"\n")
    (bindir / "ssh").chmod(0o755)
    (base / "xdg" / "ascend-launcher").mkdir(parents=True, mode=0o700)
    hung = base / "hung"
    hosts = "".join(host_entry(testbed, h, "{0: 10.97.%d.1}" % i) for i, h in enumerate(testbed.hosts))
    topo = tmp_path / "topo.yaml"
    topo.write_text(topology_head("sshedge") + "hosts:\n" + hosts + "instances:\n"
                    f"  - {{name: x, hosts: [{', '.join(h.name for h in testbed.hosts)}], command: [sleep, '600']}}\n")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "XDG_RUNTIME_DIR": str(base / "xdg"),
           "HUNG_PIDS": str(hung), "PYTHONPATH": str(ROOT)}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *argv, str(topo), "--ssh-client", "openssh",
                               "--ssh-config", str(testbed.ssh_config), "--known-hosts", str(testbed.known_hosts)],
                              capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)
    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert len(_deployment_processes(testbed, "sshedge")) >= 2 * 3  # supervisord, agent, rank per host
        down = cli("down")
        assert down.returncode == 0, down.stderr
        assert "Traceback" not in down.stderr
        for h in testbed.hosts:
            assert f"warning: {h.name}: ssh -O exit did not finish in 5 s; killed it" in down.stderr
        assert _deployment_processes(testbed, "sshedge") == []  # stopped on every host
        pids = [int(p) for p in hung.read_text().split()]
        assert len(pids) == len(testbed.hosts)
        assert not any(os.path.exists(f"/proc/{p}") and
                       Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z" for p in pids)
    finally:
        cli("down", "--purge")
        shutil.rmtree(base, ignore_errors=True)


def test_a_locked_command_opens_one_connection_per_host_while_it_takes_the_lock(testbed, tmp_path):
    """`up` opens every other host's shared connection while it takes the lock on the first one
    (transport.warm_up), and its calls use that connection: each host's sshd logs exactly one
    login for the cold `up` (no second one of the warm-up's or of the first call's), and none
    for a second `up` (the connections are shared and kept)."""
    if shutil.which("ssh") is None:
        pytest.skip("needs the OpenSSH client")
    base = Path(tempfile.mkdtemp(prefix="wu-", dir="/tmp"))  # short: the ControlPath lives under it
    (base / "xdg" / "ascend-launcher").mkdir(parents=True, mode=0o700)
    hosts = "".join(host_entry(testbed, h, "{0: 10.96.%d.1}" % i) for i, h in enumerate(testbed.hosts))
    topo = tmp_path / "topo.yaml"
    topo.write_text(topology_head("warmup") + "hosts:\n" + hosts + "instances:\n"
                    f"  - {{name: x, hosts: [{', '.join(h.name for h in testbed.hosts)}], command: [sleep, '600']}}\n")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(base / "xdg"), "PYTHONPATH": str(ROOT)}

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", *argv, str(topo), "--ssh-client", "openssh",
                               "--ssh-config", str(testbed.ssh_config), "--known-hosts", str(testbed.known_hosts)],
                              capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)

    def logins() -> dict[str, int]:
        return {h.name: h.sshd_log.read_text(errors="replace").count("Accepted publickey") for h in testbed.hosts}
    try:
        before = logins()
        up = cli("up")
        assert up.returncode == 0, up.stderr
        after = logins()
        assert {h: after[h] - before[h] for h in after} == {h.name: 1 for h in testbed.hosts}
        again = cli("up")
        assert again.returncode == 0, again.stderr
        assert logins() == after
    finally:
        cli("down", "--purge")
        shutil.rmtree(base, ignore_errors=True)


def test_a_host_side_failure_keeps_its_traceback_on_the_host(testbed, tmp_path):
    """Over real SSH: the failed action's traceback is in ROOT/logs/hostside.log on that host and in
    the operator's exception (shown under -v); the message stays one line."""
    from launcher.deploy.files import compile_file
    from launcher.deploy.session import Session
    from launcher.deploy.transport import HostsFailed, SshOptions

    hosts = "".join(host_entry(testbed, h, "{0: 10.96.%d.1}" % i) for i, h in enumerate(testbed.hosts))
    topo = tmp_path / "topo.yaml"
    topo.write_text(topology_head("hosttb") + "hosts:\n" + hosts + "instances:\n"
                    f"  - {{name: x, hosts: [{', '.join(h.name for h in testbed.hosts)}], command: [sleep, '600']}}\n")
    ssh = SshOptions(config_file=str(testbed.ssh_config), known_hosts=str(testbed.known_hosts))
    with Session(compile_file(str(topo)).plan, ssh=ssh, progress=lambda msg: None) as session:
        session.ensure_runtimes()
        with pytest.raises(HostsFailed) as caught:
            session.each("logs", lambda c: c.call("logs", "many"))
    for h in testbed.hosts:
        cause = caught.value.failures[h.name]
        assert str(cause) == f"host {h.name}: logs: ValueError: invalid literal for int() with base 10: 'many'"
        assert "in act_logs" in (cause.remote_traceback or "")
        log = testbed.run(h.name, ["cat", f"/srv/launcher/hosttb/{h.name}/logs/hostside.log"]).stdout
        assert "logs: Traceback (most recent call last):" in log and "in act_logs" in log
    assert run_cli("down", str(topo), "--purge", "--ssh-config", str(testbed.ssh_config),
                   "--known-hosts", str(testbed.known_hosts)).code == 0


def _paramiko_transport(tb, host, ssh_config: Path | None = None):
    from launcher.core.model import Host, Ssh
    from launcher.deploy.hostcmd import SshOptions
    from launcher.deploy.paramiko_transport import SshTransport
    model = Host(name=host.name, address=host.address, server_id=host.name, container_ip=None, transport="ssh",
                 ssh=Ssh(user=tb.user, identity_file=str(tb.identity_file)), deploy_dir="/srv", devices=())
    return SshTransport(model, SshOptions(config_file=str(ssh_config or tb.ssh_config),
                                          known_hosts=str(tb.known_hosts), client="paramiko"))


def test_the_python_ssh_client_sends_without_nagle_on_every_tcp_hop(testbed, tmp_path):
    """paramiko sets no socket option: with Nagle on, a command's packets sent one after the other
    (channel open, exec, data, EOF) each waited for the server's delayed ACK, 40 ms per command
    (bench/README, "Session 16"). Direct connections and a ProxyJump's first hop get TCP_NODELAY;
    and a host whose sshd refuses is an unreached host (the command ran nowhere)."""
    import socket
    h1, h2 = testbed.hosts[0], testbed.hosts[1]
    direct = _paramiko_transport(testbed, h1)
    jumped_cfg = tmp_path / "ssh_config"
    jumped_cfg.write_text(f"Host {h2.address}\n    ProxyJump {h1.address}\n\n" + Path(testbed.ssh_config).read_text())
    jumped = _paramiko_transport(testbed, h2, jumped_cfg)
    try:
        assert direct.run(["hostname"]).stdout.strip() == h1.name.encode()
        assert jumped.run(["hostname"]).stdout.strip() == h2.name.encode()
        assert direct._conn.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        hop = jumped._conn.gateway  # h2's own transport runs over a channel of h1's: h1's socket is the TCP one
        assert hop.host == h1.address and hop.transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        direct.close()
        jumped.close()
    from launcher.deploy.hostcmd import TransportError
    testbed.kill_sshd(h1.name)
    try:
        with pytest.raises(TransportError) as err:
            _paramiko_transport(testbed, h1).run(["true"])
        assert err.value.unreached and "Connection refused" in str(err.value)
    finally:
        testbed.restart_sshd(h1.name)
