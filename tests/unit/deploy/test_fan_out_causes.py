"""A per-host call that fails with a bug keeps its cause: named with its type, chained, printed under -v,
and on the host side its traceback goes to ROOT/logs/hostside.log (issue 11, §9)."""
from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest

from launcher.cli import handle_errors
from launcher.deploy.files import compile_file
from launcher.deploy.session import Session
from launcher.deploy.transport import HostsFailed, TransportError
from tests.helpers import write


def _session(tmp_path) -> Session:
    topo = write(tmp_path, f"""version: 1
name: causes
defaults:
  deploy_dir: {tmp_path / 'deploy'}
  preflight: false
hosts:
  - {{name: a, address: 127.0.0.1, transport: local, devices: {{0: 10.0.0.1}}}}
  - {{name: b, address: 127.0.0.2, transport: local, devices: {{0: 10.0.1.1}}}}
instances:
  - {{name: x, hosts: [a, b], command: [sleep, "1000"], rendezvous_port: 29956}}
""")
    return Session(compile_file(topo).plan, progress=lambda msg: None)


def _lookup(c) -> str:
    table = {"a": "found"}
    return table[c.name]  # a bug on host b: KeyError


def test_a_bug_in_a_per_host_call_is_named_and_chained(tmp_path):
    with _session(tmp_path) as session, pytest.raises(HostsFailed) as caught:
        session.each("lookup", _lookup)
    exc = caught.value
    assert str(exc) == "lookup failed on 1 host:\n  b: KeyError: 'b' (a launcher bug; -v shows its traceback)"
    assert isinstance(exc.__cause__, KeyError)


def test_verbose_prints_every_hosts_traceback(tmp_path):
    err = io.StringIO()
    with _session(tmp_path) as session, redirect_stderr(err), pytest.raises(HostsFailed):
        with handle_errors(verbose=True):
            session.each("lookup", _lookup)
    text = err.getvalue()
    assert "host b: Traceback (most recent call last):" in text
    assert "in _lookup\n    return table[c.name]" in text and "KeyError: 'b'" in text


def test_without_verbose_one_message_and_no_traceback(tmp_path):
    err = io.StringIO()
    with _session(tmp_path) as session, redirect_stderr(err):
        with handle_errors(verbose=False) as code:
            session.each("lookup", _lookup)
    assert code == [1]
    assert err.getvalue() == ("error: lookup failed on 1 host:\n"
                              "  b: KeyError: 'b' (a launcher bug; -v shows its traceback)\n")


def test_a_host_side_bug_keeps_its_traceback_in_the_hosts_log_and_under_verbose(tmp_path):
    err = io.StringIO()
    with _session(tmp_path) as session:
        session.ensure_runtimes()
        with redirect_stderr(err), pytest.raises(HostsFailed) as caught:
            with handle_errors(verbose=True):
                session.each("logs", lambda c: c.call("logs", "not-a-number"))
        root = session.clients["a"].root
    cause = caught.value.failures["a"]
    assert isinstance(cause, TransportError)
    assert str(cause) == "host a: logs: ValueError: invalid literal for int() with base 10: 'not-a-number'"
    assert "in act_logs" in (cause.remote_traceback or "")
    with open(f"{root}/logs/hostside.log", encoding="utf-8") as fh:
        log = fh.read()
    assert "logs: Traceback (most recent call last):" in log and "in act_logs" in log
    assert "ValueError: invalid literal for int() with base 10: 'not-a-number'" in log
    assert "host a: traceback on the host:" in err.getvalue() and "in act_logs" in err.getvalue()


def test_ssh_missing_at_run_time_is_the_hosts_failure_not_a_bug(tmp_path, monkeypatch):
    from launcher.deploy.transport import SshOptions, transport_for
    topo = write(tmp_path, "version: 1\nname: gone\nhosts:\n  - {name: a, address: 192.0.2.1, devices: {0: 10.0.0.1}}\n"
                           "instances:\n  - {name: x, hosts: [a], command: [sleep, '1']}\n")
    host = compile_file(topo).plan.hosts[0].host
    transport = transport_for(host, SshOptions(client="openssh"))
    monkeypatch.setenv("PATH", str(tmp_path))  # ssh went away after the flags were checked
    with pytest.raises(TransportError, match="^host a: cannot run ssh: No such file or directory$"):
        transport.run(["true"])
