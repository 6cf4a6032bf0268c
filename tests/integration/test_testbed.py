"""The network-namespace testbed behaves like N real SSH hosts (needs root; skips otherwise).

Everything here goes through real OpenSSH (client and server), real namespaces and the
real CLI; checks that the testbed left nothing behind look at the kernel and /proc, not at
the testbed's own bookkeeping.
"""
from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.testbed import BASE_DIR, Testbed, TestbedError
from tests.testbed.core import unavailable_reason
from tests.testbed.fixtures import SKIP_PREFIX, skip_unless_available  # fixtures come from tests/conftest.py

pytestmark = pytest.mark.e2e
TESTBED_HOSTS = 4
REPO = Path(__file__).resolve().parents[2]


# ---- helpers: independent of the testbed's own bookkeeping ---------------------------------

def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a <defunct> entry has already exited)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return raw[raw.rindex(")") + 2] not in "ZX"


def _eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll: after SIGKILL, <defunct> entries and namespaces can linger briefly (pitfall 11)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_names() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines()}


def _ssh_all(tb: Testbed, command: str, options: list[str] = ()) -> dict[str, subprocess.CompletedProcess]:
    """Run `command` on every host at once over OpenSSH; results by host name."""
    procs = {h.name: subprocess.Popen(tb.ssh_argv(h, command, options=options), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for h in tb.hosts}
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def _assert_gone(snapshot: dict) -> None:
    """Nothing of a torn-down testbed exists any more: netns, links, processes, state dir."""
    assert not (snapshot["netns"] & _netns_names()), "network namespaces left behind"
    assert not (snapshot["links"] & _link_names()), "bridge or veths left behind"
    for pid in snapshot["pids"]:
        assert _eventually(lambda: not _running(pid)), f"pid {pid} still running after down"
    assert not snapshot["root"].exists(), "state dir left behind"
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    assert f"inet {snapshot['gateway']}/" not in addrs


def _snapshot(tb: Testbed, extra_pids: list[int] = ()) -> dict:
    return {
        "netns": {h.netns for h in tb.hosts},
        "links": {h.veth for h in tb.hosts} | {tb.bridge},
        "pids": [h.sshd_pid for h in tb.hosts] + list(extra_pids),
        "root": tb.root,
        "gateway": tb.gateway,
    }


# ---- bring-up and reaching hosts -----------------------------------------------------------

def test_hosts_come_up_each_with_own_address_netns_and_sshd(testbed: Testbed) -> None:
    hosts = testbed.hosts
    assert [h.name for h in hosts] == ["h1", "h2", "h3", "h4"]
    assert len({h.address for h in hosts}) == 4
    assert all(h.port == 22 and h.user == testbed.user == "lt" for h in hosts)
    assert {h.netns for h in hosts} <= _netns_names()
    assert all(_running(h.sshd_pid) for h in hosts)
    assert all(h.root.is_dir() for h in hosts)
    st = os.stat(testbed.root)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755  # sshd StrictModes needs this
    for h in hosts:
        key = h.root / "sshd" / "ssh_host_ed25519_key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_openssh_with_strict_host_key_checking_lands_on_each_host(testbed: Testbed) -> None:
    results = _ssh_all(testbed, "hostname; /usr/sbin/ip -4 -o addr show",
                       options=["StrictHostKeyChecking=yes"])
    for h in testbed.hosts:
        r = results[h.name]
        assert r.returncode == 0, r.stderr
        hostname, *addr_lines = r.stdout.splitlines()
        assert hostname == h.name
        addrs = " ".join(addr_lines)
        assert f"inet {h.address}/" in addrs
        others = [o.address for o in testbed.hosts if o is not h]
        assert not any(f"inet {a}/" in addrs for a in others)


def test_ssh_by_address_gets_the_same_settings_as_by_name(testbed: Testbed) -> None:
    h = testbed.host("h4")
    r = subprocess.run(["ssh", "-F", str(testbed.ssh_config), h.address, "id -un; hostname"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [testbed.user, "h4"]


def test_known_hosts_lists_every_host_by_name_and_address(testbed: Testbed) -> None:
    lines = testbed.known_hosts.read_text().splitlines()
    names = {line.split()[0] for line in lines}
    assert names == {f"{h.name},{h.address}" for h in testbed.hosts}
    assert all(line.split()[1] == "ssh-ed25519" for line in lines)


def test_empty_known_hosts_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = testbed.ssh("h1", "true", options=[f"UserKnownHostsFile={empty}", "StrictHostKeyChecking=yes"])
    assert r.returncode == 255
    assert "Host key verification failed" in r.stderr


def test_changed_host_key_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    # h1's name and address, but h2's key: what a man in the middle would present.
    h1, h2 = testbed.host("h1"), testbed.host("h2")
    h2_key = (h2.root / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{h1.name},{h1.address} {' '.join(h2_key)}\n")
    r = testbed.ssh(h1, "true", options=[f"UserKnownHostsFile={forged}"])
    assert r.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in r.stderr


def test_paramiko_with_reject_policy_uses_testbed_known_hosts(testbed: Testbed) -> None:
    try:
        import paramiko
    except ImportError:
        pytest.skip("paramiko is not installed for this interpreter")
    h = testbed.host("h2")

    def client(known_hosts: Path | None) -> "paramiko.SSHClient":
        c = paramiko.SSHClient()
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        if known_hosts is not None:
            c.load_host_keys(str(known_hosts))
        c.connect(h.address, port=h.port, username=testbed.user, key_filename=str(testbed.identity_file),
                  look_for_keys=False, allow_agent=False, timeout=10)
        return c

    # The launcher reads ssh_config with paramiko, looking hosts up by address.
    cfg = paramiko.SSHConfig.from_path(str(testbed.ssh_config)).lookup(h.address)
    assert cfg["user"] == testbed.user
    assert cfg["identityfile"] == [str(testbed.identity_file)]
    assert cfg["userknownhostsfile"] == str(testbed.known_hosts)
    c = client(testbed.known_hosts)
    try:
        _, out, _ = c.exec_command("hostname")
        assert out.read().decode().strip() == "h2"
        with c.open_sftp() as sftp:  # the sftp subsystem is configured (pitfall 6)
            sftp.putfo(__import__("io").BytesIO(b"via paramiko\n"), "/srv/paramiko.txt")
        assert h.path("/srv/paramiko.txt").read_text() == "via paramiko\n"
    finally:
        c.close()
        h.path("/srv/paramiko.txt").unlink(missing_ok=True)
    with pytest.raises(paramiko.SSHException):
        client(None)  # no known host key: rejected, never auto-added


def test_scp_uploads_into_the_hosts_private_srv(testbed: Testbed, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(256 * 1024))
    name = f"scp-{secrets.token_hex(4)}.bin"
    r = subprocess.run(["scp", "-q", "-F", str(testbed.ssh_config), str(src), f"h3:/srv/{name}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    h3 = testbed.host("h3")
    assert h3.path(f"/srv/{name}").read_bytes() == src.read_bytes()
    assert not testbed.host("h4").path(f"/srv/{name}").exists()
    h3.path(f"/srv/{name}").unlink()


def test_root_login_and_run_share_the_hosts_view(testbed: Testbed) -> None:
    r = testbed.ssh("h2", "id -u; hostname", user="root")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "h2"]
    assert testbed.run("h2", ["hostname"]).stdout.strip() == "h2"
    as_user = testbed.run("h2", ["sh", "-c", "id -un; echo $HOME"], user=testbed.user)
    assert as_user.stdout.split() == [testbed.user, "/home/" + testbed.user]
    routes = testbed.run("h2", ["ip", "-4", "route"]).stdout
    assert "default" not in routes  # nothing can leave the machine


# ---- per-host filesystem -------------------------------------------------------------------

def test_srv_tmp_and_home_are_private_per_host(testbed: Testbed) -> None:
    tag = secrets.token_hex(4)
    paths = [f"/srv/{tag}", f"/tmp/{tag}", f"/home/{testbed.user}/{tag}"]
    write = "; ".join(f"echo h1 > {p}" for p in paths)
    r = testbed.ssh("h1", write)
    assert r.returncode == 0, r.stderr
    try:
        check = "; ".join(f"test -e {p} && echo present || echo absent" for p in paths)
        assert testbed.ssh("h1", check).stdout.split() == ["present"] * 3
        assert testbed.ssh("h2", check).stdout.split() == ["absent"] * 3
        h1, h2 = testbed.host("h1"), testbed.host("h2")
        for p in paths:
            assert h1.path(p).read_text() == "h1\n"  # on the real disk under h1's root
            assert not h2.path(p).exists()
            assert not Path(p).exists()  # and not in the machine's own /srv, /tmp, home
            assert testbed.run("h1", ["cat", p]).stdout == "h1\n"  # run() sees what ssh sees
    finally:
        for p in paths:
            testbed.host("h1").path(p).unlink(missing_ok=True)


def test_same_unix_socket_path_binds_on_two_hosts(testbed: Testbed) -> None:
    sock = f"/tmp/supervisor-{secrets.token_hex(4)}.sock"
    bind = (f"/usr/bin/python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
            f"s.bind('{sock}'); print('bound')\"")
    for name in ("h1", "h2"):
        r = testbed.ssh(name, bind)
        assert (r.returncode, r.stdout.strip()) == (0, "bound"), r.stderr
    files = [testbed.host(n).path(sock) for n in ("h1", "h2")]
    assert all(stat.S_ISSOCK(f.stat().st_mode) for f in files)
    assert files[0].stat().st_ino != files[1].stat().st_ino
    for f in files:
        f.unlink()


# ---- isolation -----------------------------------------------------------------------------

def test_isolate_makes_host_unreachable_and_restore_brings_it_back(testbed: Testbed) -> None:
    testbed.isolate("h3")
    try:
        t0 = time.monotonic()
        r = testbed.ssh("h3", "true", options=["ConnectTimeout=2"], timeout=30)
        assert r.returncode == 255
        assert time.monotonic() - t0 < 15, "ConnectTimeout=2 should end the attempt quickly"
        assert testbed.ssh("h4", "hostname").stdout.strip() == "h4"  # only h3 is cut off
        assert next(s for s in testbed.status() if s["name"] == "h3")["link"] == "down"
    finally:
        testbed.restore("h3")
    r = testbed.ssh("h3", "hostname")
    assert (r.returncode, r.stdout.strip()) == (0, "h3"), r.stderr


def test_two_testbeds_coexist_on_one_machine(testbed: Testbed, testbed_factory) -> None:
    other = testbed_factory(1)
    try:
        assert other.bridge != testbed.bridge and other.gateway != testbed.gateway
        assert other.host("h1").address != testbed.host("h1").address
        for tb in (testbed, other):
            r = tb.ssh("h1", "/usr/sbin/ip -4 -o addr show dev eth0")
            assert f"inet {tb.host('h1').address}/" in r.stdout, r.stderr
    finally:
        other.down()
    assert testbed.ssh("h1", "true").returncode == 0  # tearing one down spares the other


# ---- teardown ------------------------------------------------------------------------------

def test_down_kills_sessions_leftovers_and_removes_everything(testbed_factory) -> None:
    tb = testbed_factory(2)
    # A process started over SSH that outlives its session, as a launched daemon would.
    r = tb.ssh("h1", "nohup sleep 600 >/dev/null 2>&1 </dev/null & echo $!")
    assert r.returncode == 0, r.stderr
    stray = int(r.stdout.strip())
    assert _running(stray)
    snapshot = _snapshot(tb, [stray])
    tb.down()
    _assert_gone(snapshot)
    tb.down()  # idempotent


def test_down_after_a_crash_via_load() -> None:
    skip_unless_available()
    root = BASE_DIR / f"crash-{secrets.token_hex(3)}"
    # Another process brings a testbed up and dies by SIGKILL: no finally, no down().
    script = ("import os, signal, sys; from tests.testbed import Testbed; "
              f"Testbed.up(2, {str(root)!r}); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    try:
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        tb = Testbed.load(root)
        assert tb.ssh("h2", "hostname").stdout.strip() == "h2"  # hosts outlived their creator
        snapshot = _snapshot(tb)
        tb.down()
        _assert_gone(snapshot)
    finally:
        if (root / "state.json").exists():
            Testbed.load(root).down()


def test_cli_up_status_ssh_down() -> None:
    skip_unless_available()
    root = BASE_DIR / f"cli-test-{secrets.token_hex(3)}"
    cli = [sys.executable, "-m", "tests.testbed"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(cli + list(args), cwd=REPO, capture_output=True, text=True, timeout=60)

    try:
        up = run("up", "2", "--root", str(root))
        assert up.returncode == 0, up.stderr
        assert str(root) in up.stdout
        ssh_hint = next(line for line in up.stdout.splitlines() if line.startswith("ssh:"))
        argv = ssh_hint.split(":", 1)[1].split("(")[0].split()  # "ssh -F <config> h1"
        assert argv[:2] == ["ssh", "-F"]
        assert subprocess.run(argv + ["hostname"], capture_output=True, text=True,
                              timeout=30).stdout.strip() == "h1"
        status = run("status", "--root", str(root))
        assert "2/2 sshd alive" in status.stdout
        on_host = run("run", "--root", str(root), "h2", "--", "hostname")
        assert on_host.returncode == 0 and on_host.stdout.strip() == "h2"
        snapshot = _snapshot(Testbed.load(root))
        down = run("down", "--root", str(root))
        assert down.returncode == 0, down.stderr
        _assert_gone(snapshot)
        again = run("status", "--root", str(root))
        assert again.returncode == 1 and "no testbed state" in again.stderr
    finally:
        if (root / "state.json").exists():
            Testbed.load(root).down()


def test_failed_up_reports_sshds_words_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    skip_unless_available()
    good = Testbed._sshd_config_text
    monkeypatch.setattr(Testbed, "_sshd_config_text", lambda self, h: good(self, h) + "NoSuchOption yes\n")
    before_netns, before_links = _netns_names(), _link_names()
    before_roots = set(BASE_DIR.iterdir())
    with pytest.raises(TestbedError, match="sshd exited .*NoSuchOption"):
        Testbed.up(2)
    assert _netns_names() == before_netns
    assert _link_names() == before_links
    assert set(BASE_DIR.iterdir()) == before_roots


def test_state_dir_hidden_from_hosts_is_refused() -> None:
    skip_unless_available()
    before = _netns_names()
    with pytest.raises(TestbedError, match="must not be under /tmp"):
        Testbed.up(1, root=f"/tmp/testbed-{secrets.token_hex(3)}")
    assert _netns_names() == before


def test_unavailable_machine_gets_a_clear_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert unavailable_reason() == "not running as root"
    with pytest.raises(pytest.skip.Exception, match=f"^{SKIP_PREFIX}: not running as root"):
        skip_unless_available()
    with pytest.raises(TestbedError, match="not running as root"):
        Testbed.up(1)
