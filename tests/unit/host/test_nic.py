"""The host side's `nic` action: which interface holds an address, with the stdlib only (host/nic.py).
(On the testbed, tests/e2e/test_vllm_dp.py: `launcher discover` finds each host's veth.)"""
from __future__ import annotations

import io
import json
import os
import socket
from contextlib import redirect_stdout

import pytest

from launcher.host import hostside
from launcher.host.nic import interface_of, ipv4_of


def test_loopback_and_a_name_that_resolves_to_it_are_on_lo():
    assert ipv4_of("lo") == "127.0.0.1"
    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("localhost") == "lo"


@pytest.mark.skipif(not os.path.exists("/proc/net/if_inet6"), reason="no IPv6 on this machine")
def test_an_ipv6_address_is_found_too():
    assert interface_of("::1") == "lo"


def test_an_address_no_interface_holds_is_none():
    held = {ipv4_of(n) for _, n in socket.if_nameindex()}
    assert "192.0.2.77" not in held  # TEST-NET-1: on no interface here
    assert interface_of("192.0.2.77") is None
    assert interface_of("no-such-host.invalid") is None


def test_the_hostside_action_answers_one_json_object(tmp_path):
    out = io.StringIO()
    with redirect_stdout(out):
        assert hostside.main(["nic", str(tmp_path), "127.0.0.1"]) == 0
    assert json.loads(out.getvalue()) == {"nic": "lo", "addresses": ["127.0.0.1"]}
