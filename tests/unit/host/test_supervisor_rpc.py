"""supervisor_rpc's own XML-RPC reading, against the standard library's marshaller (what supervisord uses)."""
from __future__ import annotations

import xmlrpc.client

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.host.supervisor_rpc import RpcError, _xml_param, _xml_result

scalars = (st.integers(min_value=-2**31, max_value=2**31 - 1) | st.booleans() | st.none()
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(st.characters(blacklist_categories=("Cs", "Cc"))))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8),
                                        inner, max_size=4), max_leaves=12)


def response(value) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode()


@given(values)
def test_every_value_reads_back_as_the_stdlib_wrote_it(value):
    assert _xml_result(response(value)) == value


def test_a_process_table_as_supervisord_sends_it():
    table = [{"name": "model-r0", "group": "model", "statename": "RUNNING", "pid": 42, "start": 1700000000,
              "exitstatus": 0, "spawnerr": "", "description": "pid 42, uptime 0:00:01 <&>"}]
    assert _xml_result(response(table)) == table
    assert _xml_result(response([[["a"], [], ["b", "c"]]])) == [[["a"], [], ["b", "c"]]]  # reloadConfig


def test_a_fault_raises_with_its_code_and_text():
    with pytest.raises(RpcError, match="BAD_NAME: nope") as err:
        _xml_result(xmlrpc.client.dumps(xmlrpc.client.Fault(10, "BAD_NAME: nope"), methodresponse=True).encode())
    assert err.value.code == 10


def test_not_xml_rpc_is_an_rpc_error():
    with pytest.raises(RpcError):
        _xml_result(b"<html>502</html")
    with pytest.raises(RpcError):
        _xml_result(b"<?xml version='1.0'?><methodResponse><params></params></methodResponse>")


@pytest.mark.parametrize("arg", ["a<b>&c", "", "model-r0", True, False, 0, 7, None, 2.5])
def test_parameters_are_marshalled_as_the_stdlib_reads_them(arg):
    body = f"<?xml version='1.0'?><methodCall><methodName>m</methodName><params><param><value>" \
           f"{_xml_param(arg)}</value></param></params></methodCall>"
    params, method = xmlrpc.client.loads(body, use_builtin_types=True)
    assert (params, method) == ((arg,), "m")
    assert type(params[0]) is type(arg)
